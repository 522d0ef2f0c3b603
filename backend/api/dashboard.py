"""Serves the built React dashboard at / (same origin as the API: no CORS needed)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, send_from_directory

bp = Blueprint("dashboard", __name__)

_PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>Pulseboard</title></head>
<body style="font-family:system-ui;margin:3rem"><h1>Pulseboard</h1>
<p>The dashboard is not built yet. Run <code>make run</code> (or <code>cd frontend &amp;&amp; npm ci &amp;&amp;
npm run build</code>). The API is live: <a href="/api/health">/api/health</a>.</p></body></html>"""


def dist_dir() -> Path:
    configured = current_app.config["FRONTEND_DIST"]
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "frontend" / "dist"


@bp.get("/")
def index():
    dist = dist_dir()
    if not (dist / "index.html").exists():
        return _PLACEHOLDER, 200, {"Content-Type": "text/html; charset=utf-8"}
    response = send_from_directory(dist, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/<path:path>")
def asset(path: str):
    # Vite fingerprints asset names, so they can be cached for a long time.
    response = send_from_directory(dist_dir(), path)
    if path.startswith("assets/"):
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
