"""Per-app runtime objects (Redis store, worker, ticker), kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from backend.storage.store import Store

EXTENSION_KEY = "pulseboard"


@dataclass
class Runtime:
    store: Store
    worker: object | None = None  # backend.ingest.worker.Worker when this process runs one
    ticker: object | None = None  # backend.realtime.broadcast.Ticker when this process serves sockets
    fanout: object | None = None  # backend.realtime.fanout.Fanout when this process serves sockets
    worker_process: object | None = None  # backend.cli.serve.ChildProcess: the worker
    reader_process: object | None = None  # backend.cli.serve.ChildProcess: the read process
    read_proxy: object | None = None  # backend.web.readproxy.ReadProxy forwarding to it
    handoff: object | None = None  # backend.web.handoff.Handoff: connections handed to it
    listener: object | None = None  # backend.realtime.broadcast.FanoutListener with MESSAGE_QUEUE


def get_runtime(app: Flask | None = None) -> Runtime:
    return (app or current_app).extensions[EXTENSION_KEY]
