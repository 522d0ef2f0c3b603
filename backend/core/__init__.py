"""The pure core: event validation, quantile sketches and time-bucketed aggregates.

Nothing in this package imports Flask, Redis or eventlet, so it is fast to import and to test;
the store, worker and API build on it. Its hot modules run compiled when a current build exists
(backend/core/native.py).
"""

from backend.core.native import activate

activate(__path__)
