# syntax=docker/dockerfile:1
#
# easel: one image for every role.
#   docker build -t easel .
#   docker run -p 8080:8080 easel              # `easel serve`: API + worker, SQLite and images in /data
#   docker run easel api | worker | migrate    # the scale-out roles (DATABASE_URL, REDIS_URL, S3_*; see .env.example)
#
# easel runs its TypeScript sources directly on Node's type stripping: the server needs no build. One
# stage builds the web console with Vite; another installs production dependencies only and trims
# what Linux never loads; the runtime takes the results of both.

ARG NODE_VERSION=24

# ---- dependencies -----------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
ENV NODE_ENV=production \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
COPY package.json package-lock.json ./
# Prebuilt native modules only (libsql, sharp, onnxruntime-node's CPU binaries): no compiler needed,
# and no install scripts. `npm ci` installs exactly the committed lock.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts
# onnxruntime-node ships binaries for every OS and CPU; keep this platform's only (~200 MB less).
ARG TARGETARCH
RUN set -eu; \
    arch="${TARGETARCH:-$(node -p process.arch)}"; \
    ort=node_modules/onnxruntime-node/bin/napi-v6; \
    if [ -d "$ort" ]; then \
      rm -rf "$ort/darwin" "$ort/win32"; \
      for d in "$ort"/linux/*; do [ "$(basename "$d")" = "$arch" ] || rm -rf "$d"; done; \
    fi; \
    find node_modules -type f \( -name '*.md' -o -name '*.map' -o -name '*.d.ts' \) -delete

# ---- web console ------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS console
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund
COPY scripts/build-console.ts ./scripts/
COPY console ./console
RUN node scripts/build-console.ts --force

# ---- runtime ----------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
LABEL org.opencontainers.image.title="easel" \
      org.opencontainers.image.description="Self-hosted image generation behind the OpenAI Images API" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    EASEL_DATA_DIR=/data
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json ./
COPY --chown=root:root bin ./bin
COPY --chown=root:root src ./src
COPY --chown=root:root scripts/build-lib.ts ./scripts/
COPY --from=console --chown=root:root /app/console/dist ./console/dist
# The code is root-owned and read-only to the service; only /data is writable, by the `node` user
# (uid 1000). lib/ is src/ compiled to JavaScript (scripts/build-lib.ts: less memory per process). Then a smoke test: the CLI loads with production dependencies only, so an import of a
# dev-only package fails the build rather than the first start.
RUN node --disable-warning=ExperimentalWarning scripts/build-lib.ts && mkdir -p /data && chown node:node /data && node bin/easel.js --help >/dev/null
VOLUME ["/data"]
USER node
EXPOSE 8080
# Liveness of the HTTP roles (`serve`, `api`). Workers answer no HTTP: compose and Kubernetes turn
# this off for them (a worker that cannot work exits, and its supervisor restarts it).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Node handles SIGTERM itself: in-flight jobs get worker.shutdownGraceSeconds, then go back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/easel.js"]
CMD ["serve"]
