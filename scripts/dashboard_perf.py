"""How the dashboard holds up under load: frame times and DOM size in Chromium at rising rates.

    .venv/bin/python scripts/dashboard_perf.py [--rates 1000,5000,10000,20000] [--seconds 10]

Starts its own Redis, the server and the generator on 127.0.0.1, opens the dashboard in Debian's
Chromium (headless, no GPU) and, at each rate, records every animation frame's duration with
requestAnimationFrame, long tasks (>50 ms), the DOM node count and the JS heap. Figures are
relative: the browser, the server and the generator share this machine's cores.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import requests
from playwright.sync_api import sync_playwright

from backend.cli.embedded_redis import EmbeddedRedis, free_port
from backend.cli.procs import generator_command, pulseboard_command, stop

PROBE = """
() => {
  window.__perf = {frames: [], longTasks: 0};
  let last = performance.now();
  const tick = (t) => { window.__perf.frames.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => { window.__perf.longTasks += list.getEntries().length; })
    .observe({entryTypes: ['longtask']});
}
"""

READ = """
() => ({
  frames: window.__perf.frames.splice(0),
  longTasks: window.__perf.longTasks,
  domNodes: document.getElementsByTagName('*').length,
  rows: document.querySelectorAll('[data-testid=event-row]').length,
  heapMB: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null,
  total: document.querySelector('[data-testid=total-events]')?.innerText,
})
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,5000,10000,20000")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]

    with EmbeddedRedis() as redis_server:
        port = free_port()
        env_args = ["--port", str(port)]
        server = subprocess.Popen(
            pulseboard_command("serve", *env_args),
            env=_env(redis_server.url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        rows = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--enable-precise-memory-info",
                ],
            )
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            page.wait_for_selector("text=Connected", timeout=15_000)
            page.evaluate(PROBE)
            for rate in rates:
                gen = subprocess.Popen(
                    generator_command(redis_server.url, "--rate", str(rate), "--burst-every", "0"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    time.sleep(2)  # let the stream settle before measuring
                    page.evaluate(READ)
                    time.sleep(args.seconds)
                    m = page.evaluate(READ)
                finally:
                    stop(gen)
                frames = m["frames"] or [0.0]
                rows.append(
                    (
                        rate,
                        len(frames) / args.seconds,
                        statistics.median(frames),
                        pct(frames, 0.95),
                        max(frames),
                        m["longTasks"],
                        m["domNodes"],
                        m["rows"],
                        m["heapMB"],
                    )
                )
            browser.close()
        stop(server)

    print(
        f"{'events/s':>9} {'fps':>6} {'frame p50':>10} {'p95':>8} {'max':>8} {'long tasks':>11} "
        f"{'DOM nodes':>10} {'log rows':>9} {'heap MB':>8}"
    )
    for rate, fps, p50, p95, mx, lt, dom, nrows, heap in rows:
        print(
            f"{rate:>9} {fps:>6.1f} {p50:>8.1f}ms {p95:>6.1f}ms {mx:>6.0f}ms {lt:>11} {dom:>10} {nrows:>9} "
            f"{heap if heap is None else round(heap, 1)!s:>8}"
        )
    return 0


def _env(redis_url: str) -> dict:
    import os

    return {**os.environ, "REDIS_URL": redis_url, "PULSEBOARD_ENV_FILE": "/nonexistent"}


def _wait_ready(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/api/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} not ready after {timeout_s}s")


if __name__ == "__main__":
    raise SystemExit(main())
