"""Simulated traffic for Pulseboard, published to Redis Pub/Sub or the ingest stream.

`generator.traffic` makes events (pure, no I/O); `generator.pacing` says when they are due;
`generator.transport` writes them to Redis; `generator.control` is the control protocol shared
with the web API; `generator.publisher` is the loop that ties them together; `generator.cli` is
`pulseboard generate`. Kept free of imports here so `import generator.traffic` never pulls in
redis-py.
"""
