"""The settings' documentation stays complete: every Config setting is in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

from backend.config import Config

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_once():
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)
    settings = {k for k in Config.as_dict() if not k.startswith("_")}
    assert sorted(settings - set(listed)) == []
    assert sorted(set(listed) - settings) == []
    assert len(listed) == len(set(listed)), "a setting is listed twice"
