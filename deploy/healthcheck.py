"""Container health probe: exit 0 if URL answers 2xx within the timeout, else 1.

    python /app/healthcheck.py [URL]      (default: http://127.0.0.1:${PORT:-5000}/api/ready)

Standard library only, because the slim runtime image has neither curl nor wget. urllib treats
any status >= 400 (e.g. /api/ready's 503) as an error, so "unhealthy" covers refused
connections, timeouts and non-2xx answers alike.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT') or '5000'}/api/ready"


def check(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when healthy, else a one-line reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else default_url()
    reason = check(url)
    if reason is None:
        return 0
    print(f"unhealthy: {url}: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
