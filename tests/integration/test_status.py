"""`status` pushes: Redis and worker state as they change, on a Redis of the test's own that it
stops and starts again."""

from __future__ import annotations

import pytest

from backend.cli.embedded_redis import EmbeddedRedis
from tests.helpers import wait_for
from tests.integration.sio import Recorder


@pytest.fixture
def own_redis():
    with EmbeddedRedis() as server:
        yield server


def test_status_is_sent_on_connect_and_pushed_when_redis_goes_and_comes_back(server_factory, own_redis):
    server = server_factory(redis_url=own_redis.url)
    wait_for(lambda: server.get("/api/ready").status_code == 200, message="worker up")
    rec = Recorder(server.url)
    with rec:
        first = wait_for(lambda: list(rec.status), timeout=5, message="status on connect")[0]
        assert first["redis"] == "up" and first["since"].endswith("Z")
        wait_for(lambda: rec.status[-1]["worker"] == "up", timeout=5, message="worker up")
        own_redis.stop()
        down = wait_for(
            lambda: [s for s in list(rec.status) if s["redis"] == "down"],
            timeout=2,
            message="redis down in 2 s",
        )[0]
        assert down["worker"] == "down" and down["since"] > first["since"]
        own_redis.start()
        up = wait_for(
            lambda: [s for s in list(rec.status)[rec.status.index(down) :] if s["redis"] == "up"],
            timeout=10,
            message="redis back",
        )[0]
        assert up["since"] > down["since"]
    late = Recorder(server.url)
    with late:  # a client connecting now is told at once, not at the next change
        assert wait_for(lambda: list(late.status), timeout=5, message="status on connect")[0]["redis"] == "up"
