"""Redis killed and restarted while the generator publishes: everything recovers by itself."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import requests

from backend.embedded_redis import EmbeddedRedis
from backend.procs import generator_command
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.integration.sio import Recorder

OUTAGE_S = 2.0  # how long Redis stays down: the scenario, not a wait


def test_redis_outage_while_the_generator_publishes(server_factory, names):
    with EmbeddedRedis() as own_redis:
        server = server_factory(redis_url=own_redis.url)
        generator = subprocess.Popen(
            generator_command(own_redis.url, "--rate", "500", "--seed", "3", "--burst-every", "0"),
            cwd=ROOT,
            env=server.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            with Recorder(server.url, batch_window=60) as rec:
                wait_for(lambda: len(rec.batched_events()) >= 500, timeout=15, message="traffic flowing")

                own_redis.stop()
                down_at = time.monotonic()
                wait_for(lambda: server.get("/api/ready").status_code == 503, message="readiness 503")
                assert server.get("/api/health").status_code == 200  # alive, just not ready
                time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
                received_before = len(rec.batched_events())

                own_redis.start()
                up_at = time.monotonic()
                wait_for(
                    lambda: server.get("/api/ready").status_code == 200, timeout=15, message="readiness 200"
                )
                ready_after_s = time.monotonic() - up_at
                wait_for(
                    lambda: len(rec.batched_events()) >= received_before + 500,
                    timeout=20,
                    message="clients receiving again",
                )
                flowing_after_s = time.monotonic() - up_at
                seqs = [e["seq"] for e in rec.batched_events()]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # still increasing after the wipe
            assert server.process.poll() is None
            assert requests.get(server.url + "/api/ready", timeout=5).status_code == 200
        finally:
            generator.send_signal(signal.SIGTERM)
            out, _ = generator.communicate(timeout=15)
        assert generator.returncode == 0, out
        summary = out.strip().splitlines()[-1]
        reconnects = int(re.search(r"(\d+) reconnects", summary).group(1))
        assert reconnects >= 1, summary
        unheard = re.search(r"(\d+) published with no subscriber", summary)
        print(
            f"outage {OUTAGE_S}s: ready again after {ready_after_s:.2f}s, events flowing after "
            f"{flowing_after_s:.2f}s; generator: {summary}; "
            f"published to nobody (lost by Pub/Sub): {unheard.group(1) if unheard else 0}"
        )
        assert "resubscribed" in server.log()
        # The alert evaluator noticed too, and rebuilt its state from Redis once it was back.
        assert "analytics: Redis unavailable" in server.log()
        wait_for(lambda: server.log().count("evaluator active") >= 2, message="evaluator re-activated")
