#!/usr/bin/env bash
# npm run image:test — build the Dockerfile with podman, run the image, prove it serves, stop it, clean up.
#
# No container registry is reachable here, so the pinned node:20 base is replaced (build arg NODE_IMAGE)
# by a local stand-in: Debian bookworm minbase from debootstrap + this machine's Node 20 binary and npm.
# That base is cached under $IMAGE_TEST_CACHE, so only the first run pays for debootstrap.
#
# Checks, in two runs: (1) the embedded default (no DATABASE_URL: PGlite inside the container) and (2) the
# production mode (DATABASE_URL + REDIS_URL to this machine's PostgreSQL and Redis, 2 cluster workers; skipped
# when they are not reachable): /healthz, /readyz and the image's HEALTHCHECK pass; an API key made through the
# admin API gets a mock-model chat completion; bad keys get 401; the service runs as uid 10001 under tini; no
# devDependency is in the image; SIGTERM stops the container quickly and cleanly.
# Not part of `npm test` (needs root, podman and a few minutes).
#
# Environment: IMAGE_TEST_CACHE (default /var/tmp/llm-proxy-image-cache), IMAGE_TEST_PORT (default 18000),
# IMAGE_TEST_KEEP=1 keeps the built image, IMAGE_TEST_READY_TIMEOUT (seconds, default 180),
# IMAGE_TEST_PG (default postgres://postgres@127.0.0.1:5432), IMAGE_TEST_REDIS (default redis://127.0.0.1:6379/11),
# IMAGE_TEST_PRUNE=1 also removes the build-stage layer cache and the cached base images afterwards
# (by default they stay, so a rerun only rebuilds what changed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${IMAGE_TEST_CACHE:-/var/tmp/llm-proxy-image-cache}"
PORT="${IMAGE_TEST_PORT:-18000}"
READY_TIMEOUT="${IMAGE_TEST_READY_TIMEOUT:-180}"
NODE_VERSION="$(node --version)"
ROOTFS_IMAGE="localhost/llm-proxy-bookworm-minbase:local"
BASE_IMAGE="localhost/llm-proxy-node-base:${NODE_VERSION}"
IMAGE="localhost/llm-proxy:image-test"
NAME="llm-proxy-image-test-$$"
PG_BASE="${IMAGE_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
REDIS_URL_EXT="${IMAGE_TEST_REDIS:-redis://127.0.0.1:6379/11}"
PG_DB="llm_proxy_image_test_$$"
MASTER_KEY="image-test-master-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CONTAINERS_CONF="$ROOT/scripts/image/containers.conf"
# podman 4.3 logs an error for every container with a HEALTHCHECK when systemd is absent (it cannot create the
# timer, even with --health-interval disable) although the command succeeds: container commands send their
# stderr to $NOISE, which is shown when something fails.
NOISE="${IMAGE_TEST_CACHE:-/var/tmp/llm-proxy-image-cache}/podman-stderr.log"

log() { printf '[image-test] %s\n' "$*"; }
fail() { printf '[image-test] FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
  local rc=$?
  if podman container exists "$NAME" 2>/dev/null; then
    if [ "$rc" -ne 0 ]; then
      log "container logs (last 40 lines):"
      podman logs --tail 40 "$NAME" 2>&1 | sed 's/^/    /' || true
    fi
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$NOISE" ]; then
    log "podman stderr (last 20 lines):"
    tail -20 "$NOISE" | sed 's/^/    /' >&2
  fi
  if [ -n "${PG_CREATED:-}" ]; then
    psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ "${IMAGE_TEST_KEEP:-0}" != "1" ]; then
    podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
  fi
  if [ "${IMAGE_TEST_PRUNE:-0}" = "1" ]; then
    podman image prune -f >/dev/null 2>&1 || true
    podman rmi -f "$BASE_IMAGE" "$ROOTFS_IMAGE" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---- 1. tools from Debian ------------------------------------------------------------------------
ensure_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}; run as root or install them (apt-get install ${missing[*]})"
    log "installing ${missing[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# ---- 2. local stand-in for node:20-bookworm-slim (cached) ----------------------------------------
ensure_base() {
  if podman image exists "$BASE_IMAGE"; then
    log "base $BASE_IMAGE cached"
    return
  fi
  mkdir -p "$CACHE"
  local tarball="$CACHE/bookworm-minbase.tar"
  if [ ! -s "$tarball" ]; then
    local t0 rootfs="$CACHE/rootfs"
    t0=$(now)
    log "debootstrap bookworm minbase (first run only, ~1.5 min)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
      fail "debootstrap failed, see $CACHE/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    log "rootfs ready in $(since "$t0") s"
  fi
  if ! podman image exists "$ROOTFS_IMAGE"; then
    podman import -q "$tarball" "$ROOTFS_IMAGE" >/dev/null
  fi
  local ctx="$CACHE/base-context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$(command -v node)" "$ctx/node"
  cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$ctx/npm"
  podman build -q --format docker --build-arg "ROOTFS_IMAGE=$ROOTFS_IMAGE" -t "$BASE_IMAGE" \
    -f "$ROOT/scripts/image/base.Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "base $BASE_IMAGE built"
}

# ---- 3. the real Dockerfile ----------------------------------------------------------------------
# When this machine reaches the npm registry through a TLS-intercepting proxy (npm's cafile is set), hand
# that CA to npm inside the build through bind mounts: build-time only, nothing lands in the image.
build_mounts() {
  local cafile
  cafile=$(npm config get cafile 2>/dev/null || true)
  [ -n "$cafile" ] && [ "$cafile" != "null" ] && [ "$cafile" != "undefined" ] && [ -f "$cafile" ] || return 0
  printf 'cafile=/run/host-ca.crt\n' >"$CACHE/build.npmrc"
  printf '%s\n' -v "$cafile:/run/host-ca.crt:ro" -v "$CACHE/build.npmrc:/root/.npmrc:ro"
}

build_image() {
  [ -f "$ROOT/service/main.ts" ] || fail "service/main.ts does not exist yet"
  local t0 mounts
  mapfile -t mounts < <(build_mounts)
  t0=$(now)
  podman build --format docker "${mounts[@]}" --build-arg "NODE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" \
    >"$CACHE/build.log" 2>&1 || { tail -40 "$CACHE/build.log" >&2; fail "podman build failed (log: $CACHE/build.log)"; }
  BUILD_SECONDS=$(since "$t0")
  IMAGE_BYTES=$(podman image inspect --format '{{.Size}}' "$IMAGE")
  BASE_BYTES=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
  log "built $IMAGE in ${BUILD_SECONDS} s: $((IMAGE_BYTES / 1000000)) MB ($(((IMAGE_BYTES - BASE_BYTES) / 1000000)) MB above the base)"
}

# ---- 4. static checks on the image ---------------------------------------------------------------
check_image() {
  local user entry
  user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
  [ "$user" = "10001:10001" ] || fail "image user is '$user', expected 10001:10001"
  entry=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
  [[ "$entry" == *tini* ]] || fail "entrypoint $entry does not run an init"
  podman run --rm --health-interval disable --entrypoint /bin/sh "$IMAGE" 2>>"$NOISE" -c \
    'test ! -e node_modules/@pulumi && test ! -e node_modules/typescript && test ! -e node_modules/vitest && test -d node_modules/koa && test ! -w /app/dist' ||
    fail "image holds devDependencies, lacks koa, or lets the service user write its code"
  log "image: user 10001, tini entrypoint, production dependencies only, code read-only"
}

# ---- 5. run, probe, chat, stop -------------------------------------------------------------------
http() { curl -sS -o /tmp/image-test-body.$$ -w '%{http_code}' "$@"; }
body() { cat /tmp/image-test-body.$$; }

# Starts the container (extra `podman run` options in "$@"), waits for /readyz on $URL, then probes it.
# Sets READY_SECONDS, CHAT_MS, RSS_MB and STOP_SECONDS.
run_and_probe() {
  local t0 code i key uid exit_code
  t0=$(now)
  # No healthcheck timer (podman would need systemd for it); the HEALTHCHECK command is run once below.
  podman run -d --name "$NAME" -e "PROXY_MASTER_KEY=$MASTER_KEY" -e LOG_LEVEL=warn --health-interval disable \
    "$@" "$IMAGE" >/dev/null 2>>"$NOISE"
  for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
    code=$(http "$URL/readyz" 2>/dev/null || true)
    [ "$code" = "200" ] && break
    podman container exists "$NAME" && [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = "true" ] ||
      fail "container exited before it was ready"
    sleep 0.25
  done
  [ "$code" = "200" ] || fail "/readyz never answered 200 within ${READY_TIMEOUT}s (last: $code)"
  READY_SECONDS=$(since "$t0")
  log "  /readyz 200 after ${READY_SECONDS} s"

  code=$(http "$URL/healthz")
  [ "$code" = "200" ] || fail "/healthz answered $code"
  podman healthcheck run "$NAME" >/dev/null 2>>"$NOISE" || fail "the image's HEALTHCHECK command failed"

  uid=$(podman exec "$NAME" node -e 'console.log(process.getuid())')
  [ "$uid" = "10001" ] || fail "service runs as uid $uid"
  [ "$(podman exec "$NAME" cat /proc/1/comm)" = "tini" ] || fail "PID 1 is not tini"

  code=$(http -X POST "$URL/internal/keys" -H "Authorization: Bearer wrong-key-wrong-key-wrong-key-123" \
    -H 'content-type: application/json' -d '{"name":"image-test"}')
  [ "$code" = "401" ] || [ "$code" = "403" ] || fail "admin API accepted a wrong master key ($code)"
  code=$(http -X POST "$URL/internal/keys" -H "Authorization: Bearer $MASTER_KEY" \
    -H 'content-type: application/json' -d '{"name":"image-test"}')
  [[ "$code" == 20? ]] || fail "POST /internal/keys answered $code: $(body)"
  key=$(node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); if(!b.key) process.exit(1); console.log(b.key)' /tmp/image-test-body.$$) ||
    fail "no key in $(body)"

  t0=$(now)
  code=$(http -X POST "$URL/v1/chat/completions" -H "Authorization: Bearer $key" \
    -H 'content-type: application/json' \
    -d '{"model":"mock-chat","messages":[{"role":"user","content":"Say hello from the image test."}]}')
  CHAT_MS=$(awk -v s="$(since "$t0")" 'BEGIN { printf "%d", s * 1000 }')
  [ "$code" = "200" ] || fail "chat answered $code: $(body)"
  node -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const c = b.choices && b.choices[0] && b.choices[0].message && b.choices[0].message.content;
    if (b.object !== "chat.completion" || typeof c !== "string" || c.length === 0) process.exit(1);
    if (!b.usage || !(b.usage.total_tokens > 0)) process.exit(2);' /tmp/image-test-body.$$ ||
    fail "chat body is not a completion with content and usage: $(body)"
  code=$(http -X POST "$URL/v1/chat/completions" -H "Authorization: Bearer not-a-key" \
    -H 'content-type: application/json' -d '{"model":"mock-chat","messages":[{"role":"user","content":"hi"}]}')
  [ "$code" = "401" ] || fail "chat with a bad key answered $code"
  log "  admin key -> API key -> mock-chat completion 200 in ${CHAT_MS} ms; bad keys rejected; HEALTHCHECK ok"

  # Proportional set size (shared pages such as the node binary counted once across processes), per
  # process and in total, of everything in the container except this measuring shell.
  MEM=$(podman exec "$NAME" sh -c 'for p in /proc/[0-9]*; do
      [ "${p#/proc/}" = "$$" ] && continue
      pss=$(awk "/^Pss:/ { print \$2 }" "$p/smaps_rollup" 2>/dev/null) || continue
      [ -n "$pss" ] && printf "%s %s %s\n" "${p#/proc/}" "$(cat "$p/comm")" "$pss"
    done')
  RSS_MB=$(printf '%s\n' "$MEM" | awk '{ s += $3 } END { printf "%d", s / 1024 }')
  PROCS=$(printf '%s\n' "$MEM" | awk '{ printf "%s%s[%s]=%dMB", sep, $2, $1, $3 / 1024; sep = " " }')

  t0=$(now)
  podman stop -t 20 "$NAME" >/dev/null 2>>"$NOISE"
  STOP_SECONDS=$(since "$t0")
  exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
  [ "$exit_code" = "0" ] || [ "$exit_code" = "143" ] || fail "exit code $exit_code after SIGTERM (137 = killed after the timeout)"
  awk -v s="$STOP_SECONDS" 'BEGIN { exit !(s < 10) }' || fail "SIGTERM took ${STOP_SECONDS} s to stop the container"
  log "  memory (PSS) ${RSS_MB} MB: ${PROCS}; SIGTERM -> exited $exit_code in ${STOP_SECONDS} s"
  podman rm -f "$NAME" >/dev/null 2>>"$NOISE"
}

T_START=$(now)
mkdir -p "$(dirname "$NOISE")" && : >"$NOISE"
ensure_tools
ensure_base
build_image
check_image

log "run 1: embedded default (no DATABASE_URL: PostgreSQL inside the container)"
URL="http://127.0.0.1:$PORT"
run_and_probe -p "127.0.0.1:$PORT:8000"
SUMMARY="embedded: ready ${READY_SECONDS} s, chat ${CHAT_MS} ms, PSS ${RSS_MB} MB, stop ${STOP_SECONDS} s"

if psql "$PG_BASE/postgres" -qc "CREATE DATABASE $PG_DB" >/dev/null 2>&1 && PG_CREATED=1 &&
  redis-cli -u "$REDIS_URL_EXT" ping >/dev/null 2>&1; then
  log "run 2: production mode (DATABASE_URL + REDIS_URL on this machine, 2 workers, host network)"
  URL="http://127.0.0.1:$((PORT + 1))"
  run_and_probe --network host -e "PORT=$((PORT + 1))" -e WORKERS=2 \
    -e "DATABASE_URL=$PG_BASE/$PG_DB" -e "REDIS_URL=$REDIS_URL_EXT"
  rows=$(psql "$PG_BASE/$PG_DB" -Atc "select count(*) from pg_tables where schemaname = current_schema()" 2>/dev/null || echo 0)
  [ "${rows:-0}" -gt 0 ] || fail "no tables in $PG_DB: migrations did not run against DATABASE_URL"
  SUMMARY="$SUMMARY | production (2 workers): ready ${READY_SECONDS} s, chat ${CHAT_MS} ms, PSS ${RSS_MB} MB, stop ${STOP_SECONDS} s"
else
  log "run 2 skipped: PostgreSQL ($PG_BASE) or Redis ($REDIS_URL_EXT) not reachable"
fi

rm -f /tmp/image-test-body.$$
log "PASS in $(since "$T_START") s | build ${BUILD_SECONDS} s | image $((IMAGE_BYTES / 1000000)) MB | $SUMMARY"
