"""A real python-socketio client that records what it receives."""

from __future__ import annotations

import threading

import socketio


class Recorder:
    def __init__(self, url: str, *, batch_window: int | None = None):
        self.url = url
        self.batch_window = batch_window
        self.lock = threading.Lock()
        self.connected_msgs: list = []
        self.metric: list[dict] = []  # per-event deliveries
        self.batches: list[list[dict]] = []
        self.aggregates: list[dict] = []
        self.generator: list[dict] = []
        self.alerts: list[dict] = []
        self.status: list[dict] = []
        self.sub_acks: list = []
        self.client = socketio.Client(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5)
        c = self.client
        c.on("connected", lambda data: self._add(self.connected_msgs, data))
        c.on("metric", lambda data: self._add(self.metric, data))
        c.on("metrics", lambda data: self._add(self.batches, data))
        c.on("aggregate", lambda data: self._add(self.aggregates, data))
        c.on("generator", lambda data: self._add(self.generator, data))
        c.on("alert", lambda data: self._add(self.alerts, data))
        c.on("status", lambda data: self._add(self.status, data))
        c.on("connect", self._on_connect)
        # python-engineio hands every incoming message to a new thread, so under load two batches
        # can be recorded in the opposite order from the wire's. The handlers only append: run
        # them in the reading thread, in the order the server sent.
        eio_trigger = c.eio._trigger_event

        def in_wire_order(event, *args, **kwargs):
            if event == "message":
                kwargs["run_async"] = False
            return eio_trigger(event, *args, **kwargs)

        c.eio._trigger_event = in_wire_order

    def _add(self, target: list, item) -> None:
        with self.lock:
            target.append(item)

    def _on_connect(self) -> None:
        if self.batch_window is not None:
            # Resubscribe on every (re)connect, as the dashboard does.
            self.client.emit(
                "subscribe",
                {"mode": "batch", "window": self.batch_window},
                callback=lambda ack: self._add(self.sub_acks, ack),
            )

    def connect(self) -> Recorder:
        self.client.connect(self.url, transports=["websocket"], wait_timeout=10)
        return self

    def close(self) -> None:
        self.client.disconnect()

    def batched_events(self) -> list[dict]:
        with self.lock:
            return [event for batch in self.batches for event in batch]

    def last_event(self) -> dict | None:
        """The newest batched event: a cheap check for an end marker after many events."""
        with self.lock:
            return self.batches[-1][-1] if self.batches and self.batches[-1] else None

    def got_marker(self, metric: str) -> bool:
        last = self.last_event()
        return last is not None and last["metric"] == metric

    def __enter__(self) -> Recorder:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()
