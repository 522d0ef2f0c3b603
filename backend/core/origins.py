"""Which browser origins may call the API and open a socket (pure; no Flask)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def own_origins(environ: Mapping) -> set[str]:
    """The server's own origin(s) as a browser names them: what it was addressed by (Host), and
    what a reverse proxy says it was addressed by (X-Forwarded-Proto/-Host), like Engine.IO's
    same-origin default. A page cannot forge either for a cross-site request: the browser sets
    Host from the URL, and a cross-site X-Forwarded-* header needs a preflight we refuse."""
    out: set[str] = set()
    host = environ.get("HTTP_HOST")
    scheme = environ.get("wsgi.url_scheme", "http")
    if host:
        out.add(f"{scheme}://{host}")
        fwd_host = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
        fwd_proto = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
        out.add(f"{fwd_proto}://{fwd_host}")
    return out


def origin_allowed(origin: str | None, environ: Mapping, configured: Iterable[str]) -> bool:
    """True for the server's own origin, any origin listed in CORS_ORIGINS, or any at all when
    it is "*". A missing Origin (not a cross-origin browser request) is not an origin: False."""
    if not origin:
        return False
    configured = list(configured)
    if "*" in configured:
        return True
    origin = origin.rstrip("/")
    return origin in {o.rstrip("/") for o in configured} or origin in own_origins(environ)
