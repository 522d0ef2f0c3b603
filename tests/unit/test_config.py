"""Settings: declared once (backend/config.py), read only when an entry point loads them, and
everything else (.env.example, the analytics settings, the Flask config) derived from that."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backend import config
from backend.analytics.settings import DEFAULTS as ANALYTICS_DEFAULTS
from backend.analytics.settings import SETTINGS as ANALYTICS_SETTINGS
from backend.analytics.settings import AnalyticsSettings
from backend.config import DEFAULTS, SettingError, Settings, load, render_env_example, spec, specs

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_is_generated_from_the_declarations():
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert text == render_env_example(), "regenerate it: python -m backend.config > .env.example"


def test_env_example_lists_every_setting_once_with_its_default():
    from dotenv import dotenv_values

    values = dotenv_values(ROOT / ".env.example")
    listed = re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), flags=re.M)
    assert len(listed) == len(set(listed)), "a setting is listed twice"
    assert sorted(listed) == sorted(s.name for s in specs())
    # Copied to .env unchanged, it changes nothing.
    assert load({k: v or "" for k, v in values.items()}) == DEFAULTS


def test_every_setting_is_typed_documented_and_its_default_valid():
    for s in specs():
        assert s.type in (str, int, float, bool, tuple), s.name
        assert s.doc, f"{s.name} has no doc"
        assert s.section, s.name
        assert s.coerce(s.default) == s.default, s.name


def test_existing_names_and_defaults_are_kept():
    expected = {
        "PORT": 5000,
        "HOST": "127.0.0.1",
        "RETENTION_S": 3600,
        "MAX_BATCH_BYTES": 4 * 1024 * 1024,
        "INGEST_RATE_LIMIT": "100/second",
        "ANOMALY_TAGS": ["endpoint"],
        "CORS_ORIGINS": [],
        "MESSAGE_QUEUE": False,
        "ALERT_CLEAR_S": 10.0,
        "GENERATOR_RATE": 200.0,
        "INGEST_PARTITIONS": 1,
        "REDIS_CLUSTER": False,
        "READ_MODE": "auto",
        "READ_TIMEOUT_S": 60.0,
    }
    config = DEFAULTS.as_dict()
    assert {k: config[k] for k in expected} == expected
    assert len(config) == len(specs()) == 88


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "not-a-port"}, "PORT must be an integer, got 'not-a-port'"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535, got '70000'"),
        ({"REDIS_POOL_TIMEOUT_S": "soon"}, "REDIS_POOL_TIMEOUT_S must be a number, got 'soon'"),
        ({"PING_INTERVAL_S": "nan"}, "PING_INTERVAL_S must be a number, got 'nan'"),
        ({"MESSAGE_QUEUE": "maybe"}, "MESSAGE_QUEUE must be true or false, got 'maybe'"),
        ({"ASYNC_MODE": "asyncio"}, "ASYNC_MODE must be one of eventlet, gevent, threading, got 'asyncio'"),
        ({"RULES_MAX": "0"}, "RULES_MAX must be at least 1, got '0'"),
        ({"ANALYTICS_WINDOW_S": "0"}, "ANALYTICS_WINDOW_S must be at least 1, got '0'"),
    ],
)
def test_a_malformed_setting_is_one_clear_line(env, message):
    with pytest.raises(SettingError) as exc:
        load(env)
    assert str(exc.value) == message


def test_values_are_parsed_by_type_and_empty_means_default_for_numbers_and_switches():
    s = load(
        {
            "PORT": " 8080 ",
            "MESSAGE_QUEUE": "yes",
            "RUN_WORKER": "0",
            "CORS_ORIGINS": "https://a.example, https://b.example,",
            "ANOMALY_TAGS": "",
            "INGEST_RATE_LIMIT": "",  # empty: no limit, not the default
            "RETENTION_S": "",
            "ALERT_CLEAR_S": "3",
        }
    )
    assert (s.PORT, s.MESSAGE_QUEUE, s.RUN_WORKER) == (8080, True, False)
    assert s.CORS_ORIGINS == ("https://a.example", "https://b.example")
    assert s.ANOMALY_TAGS == () and s.INGEST_RATE_LIMIT == ""
    assert s.RETENTION_S == 3600 and s.ALERT_CLEAR_S == 3.0


def test_typed_overrides_are_checked_like_the_environment():
    assert DEFAULTS.replace({"RULES_MAX": 3, "TESTING": True}).RULES_MAX == 3
    with pytest.raises(SettingError, match="RULES_MAX must be at least 1"):
        DEFAULTS.replace({"RULES_MAX": 0})
    with pytest.raises(SettingError, match="PORT must be an integer"):
        Settings(PORT=1.5)


def test_analytics_settings_are_the_declared_ones():
    declared = {s.name for s in specs() if s.section.startswith("analytics")}
    assert set(ANALYTICS_SETTINGS) == declared
    assert {k: getattr(DEFAULTS, k) for k in declared} == ANALYTICS_DEFAULTS
    s = AnalyticsSettings.from_config({"ANALYTICS_WINDOW_S": 3, "ANOMALY_TAGS": ["region"]})
    assert (s.window_s, s.anomaly.window_s, s.anomaly_tags) == (3, 3, ("region",))
    with pytest.raises(SettingError, match="ANALYTICS_WINDOW_S must be at least 1"):
        AnalyticsSettings.from_config({"ANALYTICS_WINDOW_S": 0})


def test_load_reads_env_file_under_the_environment(tmp_path, monkeypatch):
    env_file = tmp_path / "pulse.env"
    env_file.write_text("RECENT_MAX=42\nHISTORY_S=7\n")
    monkeypatch.setenv("PULSEBOARD_ENV_FILE", str(env_file))
    monkeypatch.setenv("HISTORY_S", "9")  # a real variable wins over the file
    monkeypatch.delenv("RECENT_MAX", raising=False)
    # load() makes these the process's current settings: put the previous ones back afterwards,
    # or the rest of this test worker sees RECENT_MAX=42
    monkeypatch.setattr(config, "_current", config._current)
    s = load()
    assert (s.RECENT_MAX, s.HISTORY_S) == (42, 9)
    # load_dotenv set it in this process. Not monkeypatch.delenv: its undo would put 42 back, and
    # every later test of this worker (and the servers it starts) would run with RECENT_MAX=42.
    os.environ.pop("RECENT_MAX")


def test_spec_describes_a_setting():
    port = spec("PORT")
    assert (port.type, port.default, port.min, port.max) == (int, 5000, 1, 65535)
    assert spec("HTTP_IDLE_TIMEOUT_S").unit == "s"


# Imports every module of the pure packages (and backend.config) with os.environ and .env
# reading made to fail when code of this project does it: importing must read nothing.
_IMPORT_PURE = r"""
import importlib, os, pkgutil, sys

class Guarded(type(os.environ)):
    def _check(self):
        frame = sys._getframe(2)
        while frame is not None and frame.f_globals.get("__name__") in ("os", "collections.abc", "_collections_abc"):
            frame = frame.f_back
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        if module.split(".")[0] in ("backend", "generator", "dotenv"):
            raise AssertionError(f"{module} read os.environ at import")
    def __getitem__(self, key):
        self._check()
        return super().__getitem__(key)
    def __iter__(self):
        self._check()
        return super().__iter__()

os.environ = Guarded(os.environ._data, os.environ.encodekey, os.environ.decodekey,
                     os.environ.encodevalue, os.environ.decodevalue)
import backend.analytics, backend.core
names = ["backend.config"]
for package in (backend.core, backend.analytics):
    names += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
for name in names:
    importlib.import_module(name)
import json
print(json.dumps({"imported": names, "dotenv": "dotenv" in sys.modules}))
"""


def test_importing_core_analytics_or_config_reads_no_environment():
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PURE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["imported"]) > 10 and "backend.analytics.settings" in out["imported"]
    assert out["dotenv"] is False, "importing them loaded python-dotenv"


def test_the_guard_catches_an_import_time_read():
    code = _IMPORT_PURE.replace(
        "import backend.analytics, backend.core",
        "import backend.analytics, backend.core, backend.config; backend.config.load()",
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "read os.environ at import" in done.stderr


def test_no_module_but_config_reads_settings_from_os_environ():
    readers = []
    for path in sorted((ROOT / "backend").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if re.search(r"os\.environ|os\.getenv|load_dotenv", text) and path.name != "config.py":
            readers.append(path.relative_to(ROOT).as_posix())
    # Not settings: the Prometheus multiprocess directory and the children's environment.
    assert readers == ["backend/cli/procs.py", "backend/cli/serve.py", "backend/telemetry.py"]
