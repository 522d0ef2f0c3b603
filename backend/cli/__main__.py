"""`python -m backend.cli` is the `pulseboard` command (used to start child processes)."""

import sys

from backend.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
