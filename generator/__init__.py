"""Simulated traffic for Pulseboard, published to Redis Pub/Sub.

`generator.traffic` makes events (pure, no I/O); `generator.publisher` paces them onto Redis and
follows the dashboard's control hash; `generator.cli` is `pulseboard generate`. Kept free of
imports here so `import generator.traffic` never pulls in redis-py.
"""
