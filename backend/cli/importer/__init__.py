"""`pulseboard import FILE|-` (see command.py for what it does and why the stream):

reading.py   input files: NDJSON/CSV detection, line positions, validation (no Redis)
stream.py    the writer: chunks XADDed in transactions, backpressure on the worker's backlog
progress.py  what the user sees: the progress line and the summary
command.py   the arguments, the Importer tying them together, where to resume, exit codes
"""

from __future__ import annotations

from backend.cli.importer.command import Importer, add_arguments, run
from backend.cli.importer.progress import Result
from backend.cli.importer.reading import ImportFailed, read_csv, read_ndjson

__all__ = ["ImportFailed", "Importer", "Result", "add_arguments", "read_csv", "read_ndjson", "run"]
