"""The compiled core (backend/core/native.py): used only while it matches its sources, used
wherever it can be built, and giving what the Python sources give."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.core import native

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).with_name("core_corpus.py")
NOW = "1796070000.25"


def _build_of(sources: Path, build: Path) -> None:
    """A build's files for `sources` (empty stand-ins for the compiled modules)."""
    package = build.joinpath(*native.PACKAGE_DIR)
    package.mkdir(parents=True)
    for name in native.MODULES:
        (package / f"{name}{native.ext_suffix()}").write_bytes(b"")
    digests = {name: native.source_digest(name, sources) for name in native.MODULES}
    (build / "manifest.json").write_text(json.dumps({"ext_suffix": native.ext_suffix(), "modules": digests}))


def test_a_build_stands_in_only_for_the_sources_it_was_built_from(tmp_path):
    sources, build = tmp_path / "src", tmp_path / "build"
    sources.mkdir()
    for name in native.MODULES:
        (sources / f"{name}.py").write_text(f"# {name}\n")
    assert native.why_not(build, sources) == "no build (make native)"

    _build_of(sources, build)
    assert native.why_not(build, sources) is None

    (sources / "events.py").write_text("# edited after the build\n")
    assert native.why_not(build, sources) == "events.py changed since the build (make native)"
    (sources / "events.py").write_text("# events\n")
    assert native.why_not(build, sources) is None

    (build.joinpath(*native.PACKAGE_DIR) / f"state{native.ext_suffix()}").unlink()
    assert native.why_not(build, sources) == f"state{native.ext_suffix()} is missing from the build"

    manifest = json.loads((build / "manifest.json").read_text())
    (build / "manifest.json").write_text(json.dumps({**manifest, "ext_suffix": ".cpython-27.so"}))
    assert native.why_not(build, sources).startswith("built for .cpython-27.so")


def test_the_core_runs_compiled_wherever_it_can_be_built():
    # (make native installs mypyc itself, into build/native-env)
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the core runs as Python")
    assert native.state == "compiled (mypyc)", f"the core runs as {native.state}"
    assert native.compiled()


def _corpus(root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(CORPUS), str(root), NOW], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_compiled_core_gives_what_the_python_sources_give(tmp_path):
    # A copy of the sources with no build beside it runs as Python.
    shutil.copytree(ROOT / "backend", tmp_path / "backend", ignore=shutil.ignore_patterns("__pycache__"))
    here, plain = _corpus(ROOT), _corpus(tmp_path)
    assert plain["compiled"] is False and plain["state"] == "pure Python (no build (make native))"
    assert here["compiled"] is native.compiled()

    outcomes = plain["outcomes"]
    accepted = sum(o[0] == "ok" for o in outcomes)
    reasons = {o[1] for o in outcomes if o[0] == "rejected"}
    assert accepted > 500 and len(reasons) >= 10  # the corpus reaches both sides
    for i, (mine, theirs) in enumerate(zip(here["outcomes"], outcomes, strict=True)):
        assert mine == theirs, f"event {i}"
    assert here["batches"] == plain["batches"]
    assert here["held"] == plain["held"]
    assert here["hour"] == plain["hour"] and plain["hour"]["metrics"]["http_request"]["count"] > 100
    assert here["endpoints"] == plain["endpoints"] and "__other__" in plain["endpoints"]
    assert here["series"] == plain["series"]
    assert here["quantiles"] == plain["quantiles"]
    assert here["sketch"] is plain["sketch"] is True
