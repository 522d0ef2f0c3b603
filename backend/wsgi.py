"""WSGI entry for gunicorn: `gunicorn -k eventlet -w 1 backend.wsgi:app`.

gunicorn's eventlet/gevent worker monkey-patches before importing this module. One worker per
process: Socket.IO sessions live in process memory, so scale with more processes behind a sticky
load balancer and MESSAGE_QUEUE=true, not with more gunicorn workers.
"""

from __future__ import annotations

from backend import create_app
from backend.cli.serve import start_background
from backend.config import load
from backend.logsetup import setup

config = load()  # the environment (and .env) is read here
setup(config.LOG_LEVEL, config.LOG_FORMAT)
app = create_app()
start_background(app, worker=app.config["RUN_WORKER"])
