"""Serves the built React dashboard at / (same origin as the API: no CORS needed)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, request, send_from_directory
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

bp = Blueprint("dashboard", __name__)

_PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>Pulseboard</title></head>
<body style="font-family:system-ui;margin:3rem"><h1>Pulseboard</h1>
<p>The dashboard is not built yet. Run <code>make run</code> (or <code>cd frontend &amp;&amp; npm ci &amp;&amp;
npm run build</code>). The API is live: <a href="/api/health">/api/health</a>.</p></body></html>"""


def dist_dir() -> Path:
    configured = current_app.config["FRONTEND_DIST"]
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "frontend" / "dist"


@bp.get("/")
def index():
    dist = dist_dir()
    if not (dist / "index.html").exists():
        return _PLACEHOLDER, 200, {"Content-Type": "text/html; charset=utf-8"}
    response = send_from_directory(dist, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _api_methods(path: str) -> list[str]:
    """Methods an API route other than this catch-all takes at `path`. The catch-all matches every
    GET, so without this `GET /api/ingest` (a POST route) would answer 404 instead of 405."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    methods = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        try:
            endpoint, _ = adapter.match("/" + path, method=method)
        except HTTPException:
            continue
        if not endpoint.startswith(f"{bp.name}."):
            methods.append(method)
    return methods


@bp.get("/<path:path>")
def asset(path: str):
    if path.startswith("api/"):
        methods = _api_methods(path)
        if methods:
            raise MethodNotAllowed(valid_methods=[*methods, "OPTIONS"])
        raise NotFound()
    # Vite fingerprints asset names, so they can be cached for a long time.
    response = send_from_directory(dist_dir(), path)
    if path.startswith("assets/"):
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
