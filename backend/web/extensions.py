"""Extensions, created unbound and bound to the app in the factory."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_socketio import SocketIO

socketio = SocketIO()
# No default limits: only the write endpoints opt in (see backend/web/api/ingest.py).
limiter = Limiter(key_func=get_remote_address, default_limits=[])
