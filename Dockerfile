# syntax=docker/dockerfile:1.7
# llm-proxy container image: compiled JS + production dependencies on Node 20 (Debian bookworm slim),
# running as uid 10001 under tini. Build:  docker build -t llm-proxy .
# Local proof without a registry (podman, locally made base): npm run image:test

# Pinned base. Override only to substitute an equivalent local base (scripts/image-test.sh does).
# In CI, pin the digest too (docker buildx imagetools inspect node:20.20.2-bookworm-slim).
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# ---- build: full dependency tree (TypeScript and types), compile service/ to dist/ ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY package.json package-lock.json ./
# --omit=optional skips the 417 MB embedded Chroma server binary, which tsc does not need.
# --ignore-scripts: nothing in the tree needs an install script to compile.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=optional --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY service ./service
# Compile only service/ (tsconfig.build.json also lists bench/, which the image leaves out), then copy
# the non-TypeScript files that live beside the sources (SQL migrations, data files) into dist/.
RUN npx tsc -p tsconfig.build.json \
 && find service -type f ! -name '*.ts' -exec cp --parents {} dist/ \; \
 && test -f dist/service/main.js

# ---- deps: production dependencies only (@pulumi/*, typescript, vitest … are devDependencies) ----
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# The proxy talks to a Chroma *server* by CHROMA_URL in production; the server binary (optional
# dependency of the chromadb client, 417 MB) is only needed to spawn Chroma inside the container when
# CHROMA_URL is unset. Build with --build-arg EMBEDDED_CHROMA=true to keep it.
ARG EMBEDDED_CHROMA=false
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    if [ "$EMBEDDED_CHROMA" = "true" ]; then npm ci --omit=dev; else npm ci --omit=dev --omit=optional; fi

# ---- init: tini from Debian, so PID 1 forwards signals and reaps zombies (workers, Chroma) ----
FROM ${NODE_IMAGE} AS init
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && /usr/bin/tini-static --version

# ---- runtime ----
FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="llm-proxy" \
      org.opencontainers.image.description="OpenAI-compatible LLM proxy" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOST is explicit: the service binds 127.0.0.1 in its embedded default, which is unreachable from
# outside a container. DATA_DIR holds the embedded PostgreSQL (only when DATABASE_URL is unset) and
# the usage spool; mount a volume (or an emptyDir with a read-only root filesystem) there.
ENV NODE_ENV=production \
    PORT=8000 \
    HOST=0.0.0.0 \
    DATA_DIR=/app/data \
    HOME=/tmp
WORKDIR /app
RUN groupadd --system --gid 10001 llmproxy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin llmproxy \
 && mkdir -p /app/data \
 && chown 10001:10001 /app/data
COPY --from=init /usr/bin/tini-static /usr/local/bin/tini
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
# Code and dependencies stay root-owned and read-only to the service user.
USER 10001:10001
EXPOSE 8000
# Ignored by Kubernetes (the Deployment has its own probes); useful for docker/podman run.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# tini is PID 1: it forwards SIGTERM to the node primary, which drains its cluster workers' in-flight
# requests (SHUTDOWN_GRACE_SECONDS) and exits; tini also reaps any orphaned child.
ENTRYPOINT ["/usr/local/bin/tini", "--"]
CMD ["node", "dist/service/main.js"]
