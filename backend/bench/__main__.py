"""`python -m backend.bench` is `pulseboard bench`."""

import sys

from backend.bench.cli import main

sys.exit(main())
