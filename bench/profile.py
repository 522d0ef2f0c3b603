"""Sampling the server with py-spy while a section runs, and boiling the stacks down.

py-spy attaches to the server's pid (root, or the same user with ptrace allowed) in
``--nonblocking`` mode, so the server is never paused, and writes collapsed stacks
(``frame;frame;... count``, frames as ``function (file:line)``). It records idle samples too;
a sample whose innermost frame is a wait (the eventlet hub's poll, a selector, a lock) counts as
idle, and ``busy_pct_of_wall`` says how much of the time the server was working at all. The
shares below are shares of the busy samples.

Categories are decided per sample by the first rule that matches any frame of its stack, most
specific first, which is why e.g. the JSON decode inside ``parse_event`` counts as decoding and
not as "worker, other".
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

from backend.cli.procs import die_with_parent

# (category, regex over one frame), most specific first.
RULES: list[tuple[str, re.Pattern]] = [
    # read side (REST and the tick): window merges and the reads behind them
    (
        "read: window merge (WindowStats, timeseries)",
        # (state.py's merges under these, or under _combined, are the read's; under the
        # worker's BatchAccumulator they fall to the aggregation rule below)
        re.compile(
            r"^(WindowStats\.\w+|TagStats\.\w+|_HashMerger\.\w+|timeseries|series_json|field_json) "
            r"\(backend/core/|^_combined \(backend/storage/reads\.py"
        ),
    ),
    ("read: HGETALL pipeline + reply parsing (Store._hgetall_many)", re.compile(r"^Store\._hgetall_many \(")),
    # the ingest worker
    ("json decode (orjson.loads of incoming events)", re.compile(r"^decode \(backend/core/events\.py")),
    ("validation + normalisation (events.validate)", re.compile(r"^validate \(backend/core/events\.py")),
    ("timestamp formatting (iso_ms)", re.compile(r"backend/core/timefmt\.py")),
    ("aggregation: BatchAccumulator + sketch bins", re.compile(r"backend/core/(aggregate|sketch|state)\.py")),
    ("aggregate delta encoding (_encode_delta_args)", re.compile(r"^_encode_delta_args \(")),
    (
        "redis write: INCRBY seq, pipeline + Lua (reserve_seqs, write_batch)",
        re.compile(r"^(Store\.)?(write_batch|reserve_seqs) \(backend/store\.py"),
    ),
    # fan-out
    (
        "socket.io emit: packet encode + orjson.dumps",
        re.compile(r"(socketio/packet\.py|backend/jsonutil\.py)"),
    ),
    (
        "socket.io emit: room fan-out, queueing",
        re.compile(r"socketio/(base_manager|manager|server|base_server)\.py"),
    ),
    (
        "engine.io/websocket send",
        re.compile(
            r"(engineio/(socket|base_socket)\.py|engineio/async_drivers/|simple_websocket|"
            r"eventlet/websocket|wsproto|geventwebsocket)"
        ),
    ),
    (
        "redis pub/sub read (get_message, parse)",
        re.compile(r"^(PubSub\.)?(get_message|parse_response|handle_message|listen) \("),
    ),
    (
        "per-event LPUSH/LTRIM round trips (baseline)",
        re.compile(r"^(Worker\.)?process_per_event \(backend/worker\.py"),
    ),
    ("aggregate tick (Ticker)", re.compile(r"^(Ticker\.)?(tick|_push_aggregates|_push_generator_state) \(")),
    (
        "HTTP request handling (wsgi server, flask)",
        re.compile(r"(eventlet/wsgi\.py|werkzeug/|flask/|backend/web/api/)"),
    ),
    ("worker loop, other", re.compile(r"backend/worker\.py")),
    ("eventlet/gevent hub, scheduling", re.compile(r"(eventlet/|gevent/|greenlet)")),
]
OTHER = "other"
# A sample whose innermost frame is one of these is a thread waiting, not working.
IDLE = re.compile(
    r"^(\w+\.)*(do_poll|wait|select|poll|_recv_loop|accept|sleep|get|_wait_for_tstate_lock|run) "
    r"\((eventlet/hubs/|gevent/|selectors\.py|threading\.py|queue\.py|socket\.py|eventlet/greenio)"
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class Profiler:
    """`py-spy record` on a pid for a while; call stop() to collect."""

    def __init__(self, py_spy: str, pid: int, out_path: Path, *, rate: int = 200, max_s: float = 120.0):
        self.out_path = out_path
        out_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = out_path.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--idle",
                "--duration",
                str(int(max_s)),
                "--output",
                str(out_path),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def stop(self) -> Path | None:
        # SIGINT makes py-spy stop sampling and write what it has.
        if self.proc.poll() is None:
            self.proc.send_signal(2)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()
        return self.out_path if self.out_path.exists() else None

    def finish(self) -> dict:
        """Stop, and the summary for the results: `profile` and `profile_file`."""
        path = self.stop()
        return {
            "profile": summarize(path) if path else {"error": "py-spy wrote nothing"},
            "profile_file": str(path) if path else None,
        }


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
    line = m.group("line")
    return f"{m.group('func')} ({path}{':' + line if line else ''})"


def _func(frame: str) -> str:
    m = _FRAME.match(frame)
    return (
        f"{m.group('func')} ({_short(frame).split(' (', 1)[1].rsplit(':', 1)[0].rstrip(')')})" if m else frame
    )


def summarize(path: Path, top: int = 15) -> dict:
    """Categories, top self lines and top inclusive functions from a raw py-spy file."""
    categories: Counter = Counter()
    self_lines: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames and frames[0].startswith(("process ", "Thread", "MainThread")) and "(" not in frames[0]:
            frames = frames[1:]  # a thread-name pseudo-frame
        if not frames:
            continue
        if IDLE.search(frames[-1]):
            idle += count
            continue
        total += count
        self_lines[frames[-1]] += count
        for func in {_func(f) for f in frames}:
            inclusive[func] += count
        category = OTHER
        for name, rule in RULES:
            if any(rule.search(f) for f in frames):
                category = name
                break
        categories[category] += count
    if total == 0:
        return {"samples": 0}

    def pct(counter: Counter, n: int) -> list:
        return [[k, round(100.0 * v / total, 1)] for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "idle_samples": idle,
        "busy_pct_of_wall": round(100.0 * total / (total + idle), 1),
        "categories_pct": pct(categories, len(categories)),
        "top_self_lines_pct": pct(self_lines, top),
        "top_inclusive_pct": pct(inclusive, top + 10),
    }


def profile_or_none(py_spy: str | None, pid: int, out_path: Path) -> Profiler | None:
    """A Profiler on `pid`, given a second to attach before the caller starts the load; None
    without py-spy or when it cannot start."""
    if not py_spy:
        return None
    with contextlib.suppress(OSError):
        profiler = Profiler(py_spy, pid, out_path)
        time.sleep(1.0)
        return profiler
    return None
