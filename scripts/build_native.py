"""Compile the core's hot modules with mypyc into build/native/ (see backend/core/native.py).

    .venv/bin/python scripts/build_native.py [--strict]

Does nothing when the build matches the sources. A failed build (no C compiler, no mypyc) is
reported and leaves the core running as plain Python; with --strict it fails instead. The new
build goes to a directory of its own and replaces the old one only once it is complete, and its
manifest holds the digests of the sources as they were when it started: a source edited during
the build makes the build stale, not wrong.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.core import native  # noqa: E402

SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

out, temp, group, *paths = sys.argv[1:]
setup(
    name="pulseboard-native",
    ext_modules=mypycify(["--cache-dir", temp + "-mypy", *paths], group_name=group),
    script_args=["build_ext", "--build-lib", out, "--build-temp", temp],
)
"""


def build(strict: bool) -> int:
    reason = native.why_not()
    if reason is None:
        print("native core: up to date")
        return 0
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("native core: mypyc is not installed; the core runs as Python", file=sys.stderr)
        return 1 if strict else 0
    digests = {name: native.source_digest(name) for name in native.MODULES}
    staging = native.BUILD_DIR.with_name("native-new")
    temp = native.BUILD_DIR.with_name("native-temp")
    for path in (staging, temp):
        shutil.rmtree(path, ignore_errors=True)
    sources = [str(Path(*native.PACKAGE_DIR, f"{name}.py")) for name in native.MODULES]
    print(f"native core: compiling {', '.join(native.MODULES)} (about 15 s)")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SETUP, str(staging), str(temp), native.GROUP, *sources],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(temp, ignore_errors=True)  # (the type checker's cache beside it is kept)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        print(f"native core: the build failed; the core runs as Python\n{tail}", file=sys.stderr)
        return 1 if strict else 0
    manifest = {"ext_suffix": native.ext_suffix(), "modules": digests}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(native.BUILD_DIR, ignore_errors=True)
    staging.rename(native.BUILD_DIR)
    problem = native.why_not()
    print(f"native core: built in {time.monotonic() - started:.0f} s" + (f" ({problem})" if problem else ""))
    return 1 if strict and problem else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strict", action="store_true", help="fail when the core cannot be compiled")
    return build(p.parse_args().strict)


if __name__ == "__main__":
    sys.exit(main())
