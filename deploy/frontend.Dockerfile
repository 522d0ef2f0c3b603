# syntax=docker/dockerfile:1
#
# The front door: nginx serving the built dashboard and proxying /api and /socket.io to the web
# nodes with sticky routing (see deploy/nginx.conf and docs/deployment.md).
#
# Build from the repository root:
#   docker build -f deploy/frontend.Dockerfile -t pulseboard-nginx .

# ---- 1. dashboard: the React/Vite build (same steps as in backend.Dockerfile, so BuildKit
# reuses the cached layers when compose builds both images). -----------------------------------
FROM node:20-slim AS dashboard
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund --loglevel=error
COPY frontend/ ./
RUN npm run build

# ---- 2. nginx: static files + reverse proxy. ---------------------------------------------------
FROM nginx:1.27-alpine
# Replaces the image's nginx.conf whole (it includes conf.d/*.conf; ours does not, so the
# image's default server on :80 is not loaded next to ours).
COPY deploy/nginx.conf /etc/nginx/nginx.conf
COPY --from=dashboard /src/frontend/dist /usr/share/nginx/html
EXPOSE 80
# nginx answers /healthz itself, so this checks nginx, not the web nodes behind it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1/healthz"]
