"""`python -m bench` (`make bench`): a bounded, loopback-only benchmark of the real server.

A development tool, not part of the runtime: nothing in backend/ imports it, it needs the
`bench` extra (numpy, requests, psutil, Socket.IO clients; `dev` includes it), and the Docker
image does not carry it.

Everything runs on 127.0.0.1: an embedded redis-server, the server as a subprocess
(``python -m backend.cli.main serve``), and separate processes for the publishers
(:mod:`bench.publisher`), the bare Pub/Sub subscriber (:mod:`bench.subscriber`)
and the Socket.IO clients (:mod:`bench.clients`, :mod:`bench.rawclients`). The sections only
orchestrate, sample CPU/RSS with psutil and read counters from Redis; they never import
eventlet, so the benchmark is safe to run from the test process.

Sections, one module each (the shared `Bench` is in :mod:`bench.context`): realtime
(:mod:`bench.realtime`), ingest and late (:mod:`bench.ingest`), fanout and baseline
(:mod:`bench.fanout`), queries (:mod:`bench.queries`), soak (:mod:`bench.soak`), modes
(:mod:`bench.modes`); :mod:`bench.cli` runs them in turn. See docs/benchmarks.md.
"""
