"""Compile the core's hot modules with mypyc into build/native/ (see backend/core/native.py).

    python3 scripts/build_native.py [--strict]

Does nothing when the build matches the sources. Runs with the interpreter the project's venv is
made from (the build is for its ABI) and needs nothing of the venv: mypy (which ships mypyc, the
`native` extra of pyproject.toml) goes into an environment of its own, build/native-env, so
`make test` compiles while the venv installs. A failed build (no C compiler, no network for mypy)
is reported and leaves the core running as plain Python; with --strict it fails instead. The new
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
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.core import native  # noqa: E402  (standard library only, like this script)

ENV = native.BUILD_DIR.with_name("native-env")
# C optimisation: -O1 compiles in 5 s less than -O3 (on 2 cores, inside `make test`'s 5 minutes)
# for 4% more instructions per event (73.3k against 70.5k; Python: 89.0k).
OPT_LEVEL = "1"

SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

out, temp, group, opt, *paths = sys.argv[1:]
setup(
    name="pulseboard-native",
    ext_modules=mypycify(
        # orjson's types are not in this environment: its calls stay dynamic, as they are anyway.
        ["--cache-dir", temp + "-mypy", "--ignore-missing-imports", *paths],
        group_name=group,
        opt_level=opt,
        debug_level="0",
        target_dir=temp + "-c",
    ),
    script_args=["build_ext", "--build-lib", out, "--build-temp", temp],
)
"""


def _run(args: list) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True)


def _env_python() -> tuple[Path | None, str]:
    """build/native-env's interpreter with mypy in it (made on first use), or None and why not."""
    python = ENV / "bin" / "python"
    if python.exists() and _run([str(python), "-c", "import mypyc"]).returncode == 0:
        return python, ""
    requirement = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(ENV)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirement["native"],
        ],
    ]
    for step in steps:
        done = _run(step)
        if done.returncode != 0:
            return None, f"{' '.join(step[:4])} failed: {(done.stdout + done.stderr).strip()[-600:]}"
    return python, ""


def build(strict: bool) -> int:
    reason = native.why_not()
    if reason is None:
        print("native core: up to date")
        return 0
    started = time.monotonic()
    python, problem = _env_python()
    if python is None:
        print(f"native core: cannot get mypyc ({problem}); the core runs as Python", file=sys.stderr)
        return 1 if strict else 0
    digests = {name: native.source_digest(name) for name in native.MODULES}
    staging = native.BUILD_DIR.with_name("native-new")
    temp = native.BUILD_DIR.with_name("native-temp")
    for path in (staging, temp):
        shutil.rmtree(path, ignore_errors=True)
    sources = [str(Path(*native.PACKAGE_DIR, f"{name}.py")) for name in native.MODULES]
    print(f"native core: compiling {', '.join(native.MODULES)} (about 20 s)")
    done = _run([str(python), "-c", SETUP, str(staging), str(temp), native.GROUP, OPT_LEVEL, *sources])
    for path in (temp, Path(f"{temp}-c")):  # (the type checker's cache, temp-mypy, is kept)
        shutil.rmtree(path, ignore_errors=True)
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
