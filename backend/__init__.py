"""Pulseboard backend: Flask + Flask-SocketIO app, Redis worker and REST API.

Importing the package is deliberately free of side effects and heavy imports: the CLI must be
able to choose and monkey-patch the async mode before Flask, redis-py or socketio load.
"""

from __future__ import annotations


def create_app(config=None):
    """Application factory (see :func:`backend.web.app.create_app`)."""
    from backend.web.app import create_app as _create_app

    return _create_app(config)
