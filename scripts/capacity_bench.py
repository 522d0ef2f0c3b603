"""How many idle connections one node holds, and whether half-sent requests get closed.

    .venv/bin/python scripts/capacity_bench.py [--websockets 10000] [--slowloris 1100] [--url URL]

Starts its own Redis and `pulseboard serve` on 127.0.0.1 (unless --url is given), then opens
--websockets Engine.IO websockets that stay idle (answering the server's pings, as a Socket.IO
client does) and --slowloris connections that send half a request and then a header byte every
few seconds. While all of them are open it times GET /api/health and a fresh Socket.IO handshake,
then waits for the server's header deadline and counts the half-sent requests it closed. Prints
figures; asserts nothing (docs/deployment.md, "Capacity of a node", has the measured ones).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.cli.embedded_redis import EmbeddedRedis, free_port
from backend.cli.procs import pulseboard_command, stop


def raise_own_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def idle_websocket(session: aiohttp.ClientSession, ws_url: str, opened: list, stop_at: asyncio.Event):
    try:
        async with session.ws_connect(ws_url, autoping=True, heartbeat=None, timeout=60) as ws:
            first = await ws.receive(timeout=60)
            if first.type != aiohttp.WSMsgType.TEXT or not first.data.startswith("0"):
                return
            opened.append(1)
            while not stop_at.is_set():
                try:
                    msg = await ws.receive(timeout=1)
                except TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "2":
                    await ws.send_str("3")  # Engine.IO pong
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return
    except (TimeoutError, aiohttp.ClientError, OSError):
        return


async def slowloris(host: str, port: int, state: dict, stop_at: asyncio.Event):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        state["refused"] += 1
        return
    state["open"] += 1
    try:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        while not stop_at.is_set():
            writer.write(b"X-a: b\r\n")  # one more header line now and then, never the blank line
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=3)
            except TimeoutError:
                continue
            if not data or data.startswith(b"HTTP/1.1 408"):
                state["closed_by_server"] += 1
                return
    except OSError:
        state["closed_by_server"] += 1
    finally:
        writer.close()


async def run(args, base: str, server_pid: int | None) -> None:
    host, port = base.split("//")[1].split(":")
    port = int(port)
    ws_url = base.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    stop_at = asyncio.Event()
    opened: list = []
    slow = {"open": 0, "refused": 0, "closed_by_server": 0}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        tasks = []
        for i in range(args.websockets):
            tasks.append(asyncio.create_task(idle_websocket(session, ws_url, opened, stop_at)))
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # a ramp, not one SYN flood
        slow_tasks = [
            asyncio.create_task(slowloris(host, port, slow, stop_at)) for _ in range(args.slowloris)
        ]
        deadline = time.monotonic() + args.ramp_timeout
        last_report = time.monotonic()
        while len(opened) < args.websockets and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                print(
                    f"  {last_report - started:.0f} s: {len(opened)} websockets open, "
                    f"{slow['closed_by_server']} of {slow['open']} half-sent requests closed",
                    flush=True,
                )
        ramp_s = time.monotonic() - started
        print(f"websockets open: {len(opened)} of {args.websockets} in {ramp_s:.1f} s")
        print(f"half-sent requests open: {slow['open']} (refused {slow['refused']})")

        def probe():
            t = time.monotonic()
            try:
                ok = requests.get(base + "/api/health", timeout=10).status_code
            except requests.RequestException as exc:
                ok = type(exc).__name__
            health_ms = (time.monotonic() - t) * 1000
            t = time.monotonic()
            try:
                hs = requests.get(base + "/socket.io/?EIO=4&transport=polling", timeout=10).status_code
            except requests.RequestException as exc:
                hs = type(exc).__name__
            return ok, health_ms, hs, (time.monotonic() - t) * 1000

        for _ in range(3):
            ok, health_ms, hs, hs_ms = await asyncio.to_thread(probe)
            print(f"/api/health: {ok} in {health_ms:.0f} ms; new Socket.IO handshake: {hs} in {hs_ms:.0f} ms")
        if server_pid:
            proc = psutil.Process(server_pid)
            print(f"server RSS: {proc.memory_info().rss / 1e6:.0f} MB, open fds: {proc.num_fds()}")
        wait_s = args.header_timeout + 5
        t = time.monotonic()
        while slow["closed_by_server"] < slow["open"] and time.monotonic() - t < wait_s:
            await asyncio.sleep(0.5)
        print(
            f"half-sent requests closed by the server: {slow['closed_by_server']} of {slow['open']} "
            f"within {time.monotonic() - t:.1f} s of the ramp's end (HTTP_HEADER_TIMEOUT_S={args.header_timeout})"
        )
        print(f"websockets still open: {len(opened) - sum(t.done() for t in tasks)}")
        stop_at.set()
        await asyncio.gather(*tasks, *slow_tasks, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--websockets", type=int, default=10_000)
    parser.add_argument("--slowloris", type=int, default=1_100)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, help="the server's HTTP_HEADER_TIMEOUT_S"
    )
    parser.add_argument("--ramp-timeout", type=float, default=180.0)
    args = parser.parse_args()
    raise_own_fd_limit()
    if args.url:
        asyncio.run(run(args, args.url.rstrip("/"), None))
        return 0
    with EmbeddedRedis() as redis_server:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "PULSEBOARD_ENV_FILE": "/nonexistent",
            "HTTP_HEADER_TIMEOUT_S": str(args.header_timeout),
            "LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(pulseboard_command("serve", "--port", str(port)), env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if requests.get(base + "/api/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            asyncio.run(run(args, base, server.pid))
        finally:
            stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
