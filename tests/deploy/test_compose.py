"""docker-compose.yml, deploy/nginx.conf and the live topology, checked with the real tools (see
tests/deploy/common.py): Compose v2 validates the file, nginx -t the conf, and the compose
file's own commands run on loopback."""

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
from pathlib import Path

import pytest
import requests
import yaml

from backend.cli.embedded_redis import free_port
from backend.cli.procs import stop
from backend.config import names as setting_names
from tests.deploy.common import (
    BIN,
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILES,
    IN_CI,
    NGINX_CONF,
    ROOT,
    WEB_PORT,
    app_services,
    dockerfile_env,
    require_pip_tool,
    resolved,
    web_services,
)
from tests.helpers import wait_for


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


def nginx_command(conf: Path, tmp: Path, *extra: str) -> list[str]:
    """nginx with its prefix, start-up log and configuration under `tmp`."""
    return [nginx_binary(), "-p", str(tmp), "-e", str(tmp / "startup.log"), "-c", str(conf), *extra]


def nginx_test(conf: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        nginx_command(conf, tmp, "-t", "-q"),
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
    nginx_binary()  # skips (fails in CI) before anything starts when nginx is missing
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
            nginx_command(conf, tmp_path, "-g", "daemon off;"),
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


def test_nginx_fronts_two_gunicorn_web_nodes(model, redis_url, names, tmp_path):
    """The compose topology on loopback: Redis, `pulseboard worker`, two web nodes run with the
    exact gunicorn command and environment of docker-compose.yml, and deploy/nginx.conf in front."""
    import socketio

    gunicorn = gunicorn_binary()
    nginx_binary()  # skips (fails in CI) before anything starts when nginx is missing
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
            nginx_command(conf, tmp_path, "-g", "daemon off;"),
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
