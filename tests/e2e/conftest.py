"""Browser tests: Debian's Chromium driven by Playwright against the real server and Redis."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DIST = ROOT / "frontend" / "dist" / "index.html"


def pytest_collection_modifyitems(config, items):
    missing = []
    if not CHROMIUM.exists():
        missing.append("/usr/bin/chromium (apt-get install chromium)")
    if not DIST.exists():
        missing.append("the built dashboard (make frontend)")
    if not missing:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"browser tests need {', '.join(missing)}; CI must install them")
    skip = pytest.mark.skip(reason=f"needs {', '.join(missing)}")
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Playwright cannot download its own browser here; Debian's Chromium works. The flags keep it
    # from reaching for the network (closed here) at every start.
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1440, "height": 1000}}


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """Where the screenshot tests write their pictures: the test's own temporary folder, so a test
    run leaves the committed docs/*.png alone. `make screenshots` sets PULSEBOARD_SCREENSHOTS=docs
    to refresh the README's pictures on purpose (a relative path is taken from the repository)."""
    target = os.environ.get("PULSEBOARD_SCREENSHOTS")
    if not target:
        return tmp_path
    path = ROOT / target
    path.mkdir(parents=True, exist_ok=True)
    return path
