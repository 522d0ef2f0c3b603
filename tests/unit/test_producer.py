"""producer: a stable partition hash, hash-tagged names, and publish() on the right channel."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import zlib
from collections import Counter

import pytest

import producer
from producer import channel_for, partition_of, publish, stream_for

# Fixed expectations: CRC-32 (IEEE) is a standard, so these never change -- if one does, every
# deployed producer and worker would disagree about where a metric's events go.
KNOWN = {
    ("cpu", 4): 2,
    ("cpu", 8): 6,
    ("memory", 8): 5,
    ("latency_ms", 8): 7,
    ("température", 16): 4222893318 % 16,
    ("", 8): 0,  # crc32(b"") == 0
}


def test_crc32_reference_values():
    # The check value of CRC-32/ISO-HDLC ("123456789" -> 0xCBF43926) pins the algorithm.
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert zlib.crc32(b"cpu") == 3128971310


@pytest.mark.parametrize(("metric", "partitions"), list(KNOWN))
def test_known_partitions(metric, partitions):
    assert partition_of(metric, partitions) == KNOWN[(metric, partitions)]


def test_same_in_another_process_with_another_hash_seed():
    code = "from producer import partition_of; print([partition_of(m, 7) for m in ('a', 'cpu', 'é')])"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(_root())},
        ).stdout
        for seed in ("1", "2")
    }
    assert outs == {str([partition_of(m, 7) for m in ("a", "cpu", "é")]) + "\n"}


def _root():
    from pathlib import Path

    return Path(producer.__file__).resolve().parents[1]


def test_one_partition_is_always_zero_and_bad_counts_refused():
    assert {partition_of(f"m{i}", 1) for i in range(50)} == {0}
    with pytest.raises(ValueError):
        partition_of("cpu", 0)


@pytest.mark.parametrize("partitions", [2, 3, 8, 16])
def test_distribution_roughly_even_over_1000_names(partitions):
    counts = Counter(partition_of(f"service_{i}.latency_ms", partitions) for i in range(1000))
    assert set(counts) == set(range(partitions))
    expected = 1000 / partitions
    # Within 35% of an even share: a 1000-name sample of a uniform hash stays well inside this
    # (the worst case here is about 20%), while a broken hash (e.g. length-based) does not.
    assert all(abs(n - expected) < 0.35 * expected for n in counts.values()), counts


def test_names_are_hash_tagged():
    assert channel_for("metrics_channel", 3) == "metrics_channel:{3}"
    assert stream_for("metrics_stream", 0) == "metrics_stream:{0}"
    assert channel_for("test:abc:metrics", 12) == "test:abc:metrics:{12}"
    with pytest.raises(ValueError):
        channel_for("metrics_{x}", 1)


def test_docstring_examples():
    failures, tried = doctest.testmod(producer)
    assert tried >= 7 and failures == 0


class FakeRedis:
    def __init__(self):
        self.calls = []

    def publish(self, channel, data):
        self.calls.append(("PUBLISH", channel, data))
        return 1

    def spublish(self, channel, data):
        self.calls.append(("SPUBLISH", channel, data))
        return 1


def test_publish_goes_to_the_partition_channel():
    r = FakeRedis()
    event = {"metric": "cpu", "value": 0.5}
    assert publish(r, event, partitions=8) == 1
    ((cmd, channel, data),) = r.calls
    assert cmd == "PUBLISH" and channel == "metrics_channel:{6}"
    assert json.loads(data) == event


def test_publish_with_one_partition_keeps_todays_channel():
    r = FakeRedis()
    publish(r, {"metric": "cpu", "value": 1}, partitions=1, channel="test:x:metrics")
    assert r.calls[0][:2] == ("PUBLISH", "test:x:metrics")


def test_publish_sharded_and_malformed_events():
    r = FakeRedis()
    publish(r, {"metric": "memory", "value": 1}, partitions=8, sharded=True)
    publish(r, {"value": 1}, partitions=8)  # no metric: still delivered, to partition 0
    publish(r, {"metric": 42}, partitions=8)
    assert [c[:2] for c in r.calls] == [
        ("SPUBLISH", "metrics_channel:{5}"),
        ("PUBLISH", "metrics_channel:{0}"),
        ("PUBLISH", "metrics_channel:{0}"),
    ]
    with pytest.raises(ValueError):
        publish(r, {"metric": "cpu", "value": float("nan")}, partitions=2)


def test_producer_imports_nothing_from_backend():
    code = "import sys, producer; print(sorted(m for m in sys.modules if m.split('.')[0] == 'backend'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(_root())},
    ).stdout
    assert out.strip() == "[]"
