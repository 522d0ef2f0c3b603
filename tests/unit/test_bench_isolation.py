"""The runtime never imports the benchmark.

bench/ is a development tool: it needs the `bench` extra (numpy, requests, psutil, Socket.IO
clients) and the Docker image does not carry it (deploy/backend.Dockerfile copies backend/ and
generator/ only). An import of it anywhere in the runtime would break `pulseboard` in the image,
as `pulseboard bench` once did, so both are checked here: the source, and a fresh interpreter in
which `bench` cannot be imported at all, as in the image.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("backend", "generator")  # the packages the image installs


def _is_bench(module: str | None) -> bool:
    return module is not None and (module == "bench" or module.startswith("bench."))


def _bench_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str | None] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]  # importlib.import_module("bench..."), `python -m bench...`
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if _is_bench(n)]
    return found


def test_no_runtime_module_names_the_bench():
    files = [p for package in RUNTIME for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 20  # the walk really found the runtime's modules
    assert [hit for path in files for hit in _bench_imports(path)] == []


def test_the_image_does_not_carry_the_bench():
    text = (ROOT / "deploy" / "backend.Dockerfile").read_text()
    sources = [
        s for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M) for s in line.split()[:-1]
    ]
    assert "backend/" in sources  # the parse found the COPY lines
    assert not [s for s in sources if s.startswith(("bench", ".")) and s != "./"], sources


# Every runtime module imported with an import hook that refuses `bench` and notes each attempt
# (so even an import wrapped in try/except shows). backend.wsgi is left out: importing it builds
# the app and starts the worker threads, which is what create_app below covers without threads.
CHECK = """
import importlib, json, pkgutil, sys

attempts = []


class RefuseBench:
    def find_spec(self, name, path=None, target=None):
        if name == "bench" or name.startswith("bench."):
            attempts.append(name)
            raise ImportError(f"{name}: not in the runtime")
        return None


sys.meta_path.insert(0, RefuseBench())
import backend, generator

for package in (backend, generator):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name != "backend.wsgi":
            importlib.import_module(info.name)

from backend import create_app
from backend.cli.main import build_parser

create_app({"REDIS_URL": "redis://127.0.0.1:1/0"})  # connects to nothing until a request
commands = next(a for a in build_parser()._actions if a.dest == "command").choices
loaded = [m for m in sys.modules if m == "bench" or m.startswith("bench.")]
print(json.dumps({"attempts": attempts, "loaded": loaded, "commands": sorted(commands)}))
"""


@pytest.mark.timeout(60)
def test_the_runtime_imports_and_starts_without_the_bench():
    proc = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        env={"PATH": "/usr/bin:/bin", "PULSEBOARD_ENV_FILE": "/nonexistent"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["attempts"] == [] and seen["loaded"] == []
    # The production CLI has no benchmark subcommand (`make bench` / `python -m bench` instead).
    assert seen["commands"] == ["generate", "import", "reader", "serve", "up", "worker"]


def test_the_hook_would_catch_an_import_of_the_bench():
    """The check above can fail: the same hook, then one import of the bench."""
    code = CHECK.replace(
        "import backend, generator",
        "import backend, generator\ntry:\n    import bench.cli\nexcept ImportError:\n    pass",
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["attempts"] == ["bench"]
