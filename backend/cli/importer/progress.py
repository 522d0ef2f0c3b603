"""What an import tells its user: progress on stderr while it runs, the summary at the end."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from backend.cli.importer.reading import Position

TTY_REDRAW_S = 0.2
LOG_EVERY_S = 5.0


class Progress:
    """Rate, ETA and rejections on stderr: one redrawn line on a terminal, else a line every few s.

    The ETA is for the whole job: when the importer waits for the worker (the default), the end
    is when the worker has stored the last event, so it is the larger of what is left to read at
    the read rate and what is left to store (unread lines plus the backlog) at the worker's rate."""

    def __init__(self, out, name: str, total_bytes: int | None, tty: bool, wait: bool = True):
        self.out = out
        self.name = name
        self.total = total_bytes
        self.tty = tty
        self.wait = wait
        self.started = time.monotonic()
        # (t, lines, events the worker is done with) over the last ~5 s
        self._samples: deque[tuple[float, int, int]] = deque([(self.started, 0, 0)])
        # A log gets its first line after LOG_EVERY_S, a terminal at once.
        self._last_draw = 0.0 if tty else self.started
        self._drawn = False

    def update(
        self,
        pos: Position,
        queued: int,
        rejected: int,
        backlog: int | None,
        state: str = "reading",  # "reading", "waiting" (for room in the backlog) or "draining"
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        every = TTY_REDRAW_S if self.tty else LOG_EVERY_S
        if not force and now - self._last_draw < every:
            return
        self._last_draw = now
        done = max(0, queued - backlog) if backlog is not None else queued
        samples = self._samples
        samples.append((now, pos.line, done))
        while len(samples) > 2 and now - samples[0][0] > 5.0:
            samples.popleft()
        t0, lines0, done0 = samples[0]
        span = max(now - t0, 1e-6)
        line_rate = (pos.line - lines0) / span
        done_rate = (done - done0) / span

        left_lines = None  # lines still to read, estimated from the bytes left
        if state == "draining":
            left_lines = 0
        elif self.total and pos.line:
            left_lines = (self.total - pos.bytes) / (pos.bytes / pos.line)
        eta = None
        if left_lines is not None:
            etas = [left_lines / line_rate if line_rate > 0 else (0.0 if not left_lines else None)]
            if self.wait:
                left_work = left_lines + (backlog or 0)
                etas.append(left_work / done_rate if done_rate > 0 else (0.0 if not left_work else None))
            eta = None if None in etas else max(etas)

        if state == "draining":
            parts = [f"all {pos.line:,} lines read", f"{queued:,} queued", f"{rejected:,} rejected"]
            text = ", ".join(parts) + f"; the worker has {backlog or 0:,} to go ({done_rate:,.0f}/s)"
        else:
            parts = []
            if self.total:
                parts.append(f"{min(100.0, 100.0 * pos.bytes / self.total):3.0f}%")
            parts.append(f"line {pos.line:,}")
            parts.append(f"{queued:,} queued" + (f" (backlog {backlog:,})" if backlog is not None else ""))
            parts.append(f"{rejected:,} rejected")
            parts.append(f"{line_rate:,.0f} lines/s")
            text = ", ".join(parts)
        if left_lines is not None:
            text += f", ETA {_duration(eta) if eta is not None else '?'}"
        if state == "waiting":
            text += ", waiting for the worker"
        text = f"importing {self.name}: {text}"
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A line of its own, above the progress line."""
        if self.tty and self._drawn:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()
        self._last_draw = 0.0  # redraw the bar at the next update

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Result:
    name: str
    stream: str
    lines: int = 0
    queued: int = 0
    stored_wait: bool = False  # the worker was seen to have processed everything queued
    rejected: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    interrupted: bool = False
    retention_s: int = 0

    def summary(self) -> str:
        rate = self.queued / self.elapsed_s if self.elapsed_s > 0 else 0.0
        done = "processed by the worker" if self.stored_wait else "queued"
        head = "interrupted" if self.interrupted else "imported"
        lines = [
            f"{head} {self.name}: {self.queued:,} events {done} via stream {self.stream!r} "
            f"in {self.elapsed_s:.1f}s ({rate:,.0f}/s); {self.lines:,} lines read"
        ]
        total = sum(self.rejected.values())
        too_old = self.rejected.get("stale_ts", 0)
        if total:
            reasons = ", ".join(
                f"{reason} {n:,}" for reason, n in sorted(self.rejected.items(), key=lambda kv: -kv[1])
            )
            lines.append(f"rejected {total:,} lines: {reasons}")
        lines.append(
            f"too old (more than RETENTION_S={self.retention_s}s before now, not aggregated): {too_old:,}"
        )
        return "\n".join(lines)
