"""`pulseboard bench`: a bounded, loopback-only benchmark of the real server.

Everything runs on 127.0.0.1: an embedded redis-server, the server as a subprocess
(``python -m backend.cli serve``), and separate processes for the publishers
(:mod:`backend.bench.publisher`), the bare Pub/Sub subscriber (:mod:`backend.bench.subscriber`)
and the Socket.IO clients (:mod:`backend.bench.clients`). The runner (:mod:`backend.bench.runner`)
only orchestrates, samples CPU/RSS with psutil and reads counters from Redis; it never imports
eventlet, so it is safe to run from the test process.

Sections: ingest, fanout, baseline, queries, soak, modes. See docs/benchmarks.md.
"""
