"""`python -m bench` (`make bench`): a bounded, loopback-only benchmark of the real server.

A development tool, not part of the runtime: nothing in backend/ imports it, it needs the
`bench` extra (numpy, requests, psutil, Socket.IO clients; `dev` includes it), and the Docker
image does not carry it.

Everything runs on 127.0.0.1: an embedded redis-server, the server as a subprocess
(``python -m backend.cli serve``), and separate processes for the publishers
(:mod:`bench.publisher`), the bare Pub/Sub subscriber (:mod:`bench.subscriber`)
and the Socket.IO clients (:mod:`bench.clients`). The runner (:mod:`bench.runner`)
only orchestrates, samples CPU/RSS with psutil and reads counters from Redis; it never imports
eventlet, so it is safe to run from the test process.

Sections: ingest, fanout, baseline, queries, soak, modes. See docs/benchmarks.md.
"""
