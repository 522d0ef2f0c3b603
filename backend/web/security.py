"""Browser-facing protections: CORS on REST (and the same rule for Socket.IO), a CSRF guard on
writes, and `X-Content-Type-Options: nosniff` on every response."""

from __future__ import annotations

from flask import Flask, request

from backend.core.origins import origin_allowed
from backend.web.errors import ApiError

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALLOW_HEADERS = "Content-Type, X-API-Key, X-Requested-With"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSE_HEADERS = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"


def socketio_origin_check(configured: list[str]):
    """cors_allowed_origins for Engine.IO: a listed origin, or the server's own one. (Engine.IO's
    own default, same-origin, is dropped as soon as a list is given: a list used to lock the
    dashboard out of its own server.)"""

    def allowed(origin, environ=None):
        return origin_allowed(origin, environ or {}, configured)

    return allowed


def _is_json(mimetype: str | None) -> bool:
    return bool(mimetype) and (mimetype == "application/json" or mimetype.endswith("+json"))


def register_security(app: Flask) -> None:
    configured = app.config["CORS_ORIGINS"]

    @app.before_request
    def _csrf_guard():
        """A cross-site page can POST a form or a no-cors fetch with no preflight. It cannot send
        a JSON Content-Type or a custom header without one (which we answer only for allowed
        origins), and its browser always names its Origin: so a write needs an allowed Origin,
        or, without one (curl, scripts), a JSON body or an X-Requested-With / X-API-Key header."""
        if (
            request.method not in WRITE_METHODS
            or not request.path.startswith("/api/")
            or request.routing_exception is not None  # 404/405 first: nothing would be written
        ):
            return None
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            if origin_allowed(origin, request.environ, configured):
                return None
            raise ApiError(403, f"cross-origin request from {origin} refused (not in CORS_ORIGINS)")
        if (
            app.config["INGEST_API_KEY"]  # then the key check guards every write (a custom header)
            or _is_json(request.mimetype)
            or "X-Requested-With" in request.headers
            or "X-API-Key" in request.headers
        ):
            return None
        raise ApiError(
            415,
            "a write needs a JSON body (Content-Type: application/json) or an X-Requested-With "
            "or X-API-Key header",
        )

    @app.after_request
    def _cors_headers(response):
        origin = request.headers.get("Origin")
        if request.path.startswith("/api/") and origin_allowed(origin, request.environ, configured):
            response.headers["Access-Control-Allow-Origin"] = "*" if configured == ["*"] else origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        if request.path.startswith("/api/"):
            response.vary.add("Origin")
        return response

    inner = app.wsgi_app

    def nosniff(environ, start_response):
        # A WSGI wrapper, not after_request, so Socket.IO's polling responses get it too.
        def start(status, headers, exc_info=None):
            if not any(name.lower() == "x-content-type-options" for name, _ in headers):
                headers = [*headers, ("X-Content-Type-Options", "nosniff")]
            return start_response(status, headers, exc_info)

        return inner(environ, start)

    app.wsgi_app = nosniff
