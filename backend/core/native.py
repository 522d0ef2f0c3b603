"""The core's compiled build (mypyc), used when it matches the sources beside it.

`make native` (scripts/build_native.py; `make run` and `make test` run it first) compiles
MODULES with mypyc into build/native/ and writes a manifest of their sources' SHA-256. When
backend.core is imported, the build goes ahead of the sources on the package's path only if the
manifest matches every source and this interpreter's extension suffix: an edited source is never
shadowed by an older build, it runs as Python until the next `make native`. Where no build exists
(no C compiler, an install without the Makefile) the same modules run as plain Python; the worker's
per-event work then costs 1.2x the instructions (docs/benchmarks.md, session 13). A copy of the
sources without build/ beside it, as `scripts/worker_cost.py --pure` makes, runs as Python too.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from pathlib import Path

# Compiled together, as one group: they call each other through C, not through module attributes.
# The worker's per-event work (events, aggregate) and the readers' merges (layout, window).
MODULES = ("timefmt", "sketch", "state", "layout", "events", "aggregate", "window")
SOURCE_DIR = Path(__file__).resolve().parent
BUILD_DIR = SOURCE_DIR.parents[1] / "build" / "native"
PACKAGE_DIR = ("backend", "core")
GROUP = "pulseboard_native"  # the build's shared library: a top-level module, GROUP + "__mypyc"

state = "pure Python (not activated)"


def source_digest(name: str, source_dir: Path = SOURCE_DIR) -> str:
    return hashlib.sha256((source_dir / f"{name}.py").read_bytes()).hexdigest()


def ext_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def why_not(build_dir: Path = BUILD_DIR, source_dir: Path = SOURCE_DIR) -> str | None:
    """Why the build in `build_dir` cannot stand in for the sources in `source_dir`; None if it can."""
    try:
        manifest = json.loads((build_dir / "manifest.json").read_text())
    except FileNotFoundError:
        return "no build (make native)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    if manifest.get("ext_suffix") != ext_suffix():
        return f"built for {manifest.get('ext_suffix')}, this Python loads {ext_suffix()}"
    built = manifest.get("modules", {})
    package = build_dir.joinpath(*PACKAGE_DIR)
    for name in MODULES:
        if built.get(name) != source_digest(name, source_dir):
            return f"{name}.py changed since the build (make native)"
        if not (package / f"{name}{ext_suffix()}").is_file():
            return f"{name}{ext_suffix()} is missing from the build"
    return None


def activate(package_path: list[str]) -> None:
    """Put a current build ahead of the sources on backend.core's `__path__`."""
    global state
    reason = why_not()
    if reason is not None:
        state = f"pure Python ({reason})"
        return
    package_path.insert(0, str(BUILD_DIR.joinpath(*PACKAGE_DIR)))
    if str(BUILD_DIR) not in sys.path:
        sys.path.append(str(BUILD_DIR))  # the group's shared library, imported by each module
    state = "compiled (mypyc)"


def compiled() -> bool:
    """Whether the core's modules are the build's."""
    from backend.core import events

    return not (events.__file__ or "").endswith(".py")
