"""`python -m bench`: the benchmark's entry point (`make bench` runs it)."""

import sys

from bench.cli import main

sys.exit(main())
