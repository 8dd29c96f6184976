/**
 * A cluster worker: receives its init (database URL, master key …) from the primary over IPC, builds the adapters
 * and the app, serves, and on SIGTERM drains: stops accepting, finishes in-flight requests and streams within the
 * grace period, flushes usage, exits 0. Loaded only in worker processes (the primary stays small).
 */
import cluster from "node:cluster";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import v8 from "node:v8";
import { ConfigError, loadConfig, type Config } from "./config";
import { buildApp } from "./app";
import { createDeps } from "./deps";
import { createKeyEventBus, type KeyEvent } from "./adapters/key-events";
import { checkRedisAtStart } from "./adapters/redis";
import { createLogger } from "./logger";
import { registry } from "./metrics";
import type { WorkerInit } from "./primary";
import { inflightCount } from "./stages/request-context";
import { configNeedsTokenCounts } from "./stages/token-count";
import { preloadEncoding } from "./lib/tokens";
import { listenProblem, StartupError } from "./lib/startup";

/** Ask the primary for the pod-wide metrics (it collects every worker's registry). */
function clusterMetricsText(): Promise<{ contentType: string; body: string }> {
  if (!cluster.isWorker || !process.send) {
    return registry.metrics().then((body) => ({ contentType: registry.contentType, body }));
  }
  const id = Math.random().toString(36).slice(2);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.off("message", onMessage);
      reject(new Error("metrics request to the primary timed out"));
    }, 5_000);
    function onMessage(msg: unknown) {
      const m = msg as { type?: string; id?: string; body?: string; contentType?: string };
      if (m?.type !== "llmproxy:metrics" || m.id !== id) return;
      clearTimeout(timer);
      process.off("message", onMessage);
      resolve({ contentType: m.contentType ?? registry.contentType, body: m.body ?? "" });
    }
    process.on("message", onMessage);
    process.send!({ type: "llmproxy:metrics-request", id });
  });
}

/**
 * Under load a worker promotes short-lived request objects into the old generation faster than a young-generation
 * GC can drop them, and V8 by default lets the old generation grow to up to 4 x its live size before a full GC:
 * 128 MiB idle became 200-240 MiB at 32 concurrent connections. Growing by at most 30 % keeps a worker under
 * 150 MiB for about 5 % more CPU (bench/RESULTS.md). Set at run time so an unknown flag cannot stop a worker.
 */
export const WORKER_HEAP_FLAGS = "--heap-growing-percent=30";

/** The configuration from the text the primary read at start (never the file again: see main.ts). */
function workerConfig(init: WorkerInit): Config {
  try {
    return loadConfig({ env: process.env, fileText: init.configText ?? undefined });
  } catch (error) {
    if (error instanceof ConfigError) throw new StartupError(error.message);
    throw error;
  }
}

export async function runWorker(): Promise<void> {
  v8.setFlagsFromString(WORKER_HEAP_FLAGS);
  // A stop asked for while this worker is still starting (the pod stopped right after a sibling got ready) would find
  // no drain handler yet: the primary's message was lost and the worker served on until killed 40 s later. It is
  // remembered here and honoured once the handlers below exist.
  let stopAsked = false;
  const askStop = () => {
    stopAsked = true;
  };
  const askStopByMessage = (msg: unknown) => {
    if ((msg as { type?: string })?.type === "llmproxy:drain") stopAsked = true;
  };
  process.on("SIGTERM", askStop);
  process.on("SIGINT", askStop);
  process.on("message", askStopByMessage);
  // Answer the primary's collection of the pod's metrics with this worker's registry (primary.ts collectMetrics).
  process.on("message", (msg: unknown) => {
    const m = msg as { type?: string; id?: string };
    if (m?.type !== "llmproxy:metrics-collect") return;
    void registry
      .getMetricsAsJSON()
      .then((metrics) => process.send?.({ type: "llmproxy:metrics-json", id: m.id, metrics }));
  });
  // Ask for the init message only once we listen for it (a message sent earlier would be lost).
  const initMessage = new Promise<WorkerInit>((resolve) => {
    const onMessage = (msg: unknown) => {
      if ((msg as { type?: string })?.type !== "llmproxy:init") return;
      process.off("message", onMessage);
      resolve(msg as WorkerInit);
    };
    process.on("message", onMessage);
  });
  process.send?.({ type: "llmproxy:init-request" });
  const init = await initMessage;
  const base = workerConfig(init);
  const config: Config = Object.freeze({
    ...base,
    masterKey: init.masterKey,
    chroma: { url: init.chromaUrl },
  });
  const log = createLogger(
    config.logLevel,
    { role: "worker", worker: cluster.worker?.id },
    { flushMs: config.logFlushMs },
  );
  // A stray rejection must not take the worker (and its open streams) down; an uncaught exception leaves the
  // process in an unknown state, so that one exits and the primary starts a replacement.
  process.on("unhandledRejection", (reason) => log.error({ err: reason }, "unhandled rejection"));
  let usageWriter: { spoolNow(): number } | null = null;
  process.on("uncaughtException", (error) => {
    log.fatal({ err: error }, "uncaught exception; exiting so the primary replaces this worker");
    // The usage rows not yet written go to the spool (synchronously) instead of dying with the process.
    try {
      const spooled = usageWriter?.spoolNow() ?? 0;
      if (spooled) log.warn({ rows: spooled }, "usage rows spooled to disk for replay at next start");
    } catch (spoolError) {
      log.error({ err: spoolError }, "usage rows could not be spooled; lost");
    }
    process.exit(1);
  });
  let draining = false;
  let cutOff = false;
  const built = await createDeps(config, {
    log,
    databaseUrl: init.databaseUrl,
    ...(init.poolOptions ? { poolOptions: init.poolOptions } : {}),
    isDraining: () => draining,
    isCutOff: () => cutOff,
    metricsText: clusterMetricsText,
  });
  usageWriter = built.usageWriter;
  if (config.redis.url) {
    // Refused credentials stop the start (exit 78: the primary stops the pod with the message); an unreachable Redis
    // is logged and waited out (fail-open / fail-closed).
    await checkRedisAtStart({
      url: config.redis.url,
      tlsCa: config.redis.tlsCa,
      cluster: config.redis.cluster,
      log,
      failureMode: config.limits.failureMode,
    });
  }
  // Rows a worker of this pod spooled when it died (an uncaught exception) would otherwise wait for the pod's next
  // start: its replacement replays them now, in the background (claims keep two workers off one file).
  void built.usageWriter.replaySpool().then(
    (rows) => {
      if (rows) log.info({ rows }, "replayed spooled usage rows");
    },
    (error: unknown) => log.warn({ err: error }, "spool replay failed; it is tried again at the next start"),
  );
  // A revocation, rotation or key/team change made through this worker applies at once on every worker of the pod
  // (the primary relays it) and, with Redis, on every other replica (pub/sub); each drops its cached lookups.
  // Without Redis other replicas catch up within the key cache's 5 s.
  const { onKeyRevoked, onTeamChanged } = built.deps;
  const forgetLocally = (e: KeyEvent) => (e.kind === "key" ? onKeyRevoked : onTeamChanged)?.(e.id);
  const bus = config.redis.url
    ? createKeyEventBus({
        url: config.redis.url,
        tlsCa: config.redis.tlsCa,
        cluster: config.redis.cluster,
        log,
        onEvent: forgetLocally,
      })
    : null;
  const announce = (e: KeyEvent) => {
    forgetLocally(e);
    process.send?.({ type: "llmproxy:forget", ...e });
    bus?.publish(e);
  };
  built.deps.onKeyRevoked = (id) => announce({ kind: "key", id });
  built.deps.onTeamChanged = (id) => announce({ kind: "team", id });
  process.on("message", (msg: unknown) => {
    const m = msg as { type?: string; kind?: string; id?: unknown };
    if (m?.type !== "llmproxy:forget" || typeof m.id !== "string") return;
    if (m.kind === "key" || m.kind === "team") forgetLocally({ kind: m.kind, id: m.id });
  });
  // Load the tokenizer before taking traffic when the config needs token counts (limits or token budgets).
  if (configNeedsTokenCounts(config)) preloadEncoding("o200k_base");
  const app = buildApp(built.deps);
  const server = http.createServer(app.callback());
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = config.server.requestTimeoutMs;
  server.listen(config.server.port, config.server.host);
  try {
    await once(server, "listening");
  } catch (error) {
    const problem = listenProblem(error, config.server.host, config.server.port);
    if (problem) throw new StartupError(problem, { cause: error });
    throw error;
  }
  // The port the system chose when PORT=0 (in a cluster every worker shares it).
  const port = (server.address() as AddressInfo | null)?.port ?? config.server.port;
  log.info({ port }, "worker listening");
  process.send?.({ type: "llmproxy:ready", port });

  let stopping = false;
  const drain = async () => {
    if (stopping) return;
    stopping = true;
    draining = true;
    log.info({ inflight: inflightCount() }, "draining");
    server.close();
    server.closeIdleConnections();
    const deadline = Date.now() + config.server.shutdownGraceSeconds * 1000;
    while (inflightCount() > 0 && Date.now() < deadline) {
      await sleep(50);
      server.closeIdleConnections();
    }
    if (inflightCount() > 0)
      log.warn({ inflight: inflightCount() }, "grace period over; closing open requests");
    cutOff = true;
    server.closeAllConnections();
    // The cut requests finish (and record their rows) on their sockets' close events: let them, before the usage
    // writer's last flush, so their rows reach PostgreSQL rather than the spool.
    for (const until = Date.now() + 1_000; inflightCount() > 0 && Date.now() < until;) await sleep(10);
    await bus?.close();
    await built.close();
    log.info("worker stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void drain());
  process.on("SIGINT", () => void drain());
  // A closed terminal sends SIGHUP to every process of the group: the primary drains the workers (its handler), so
  // here it must not kill the worker (Node's default) with requests in flight.
  process.on("SIGHUP", () => log.debug("SIGHUP: the primary drains the workers"));
  // The primary asks via IPC too (a worker may not see the terminal's signal).
  process.on("message", (msg: unknown) => {
    if ((msg as { type?: string })?.type === "llmproxy:drain") void drain();
  });
  process.on("disconnect", () => void drain());
  process.off("SIGTERM", askStop);
  process.off("SIGINT", askStop);
  process.off("message", askStopByMessage);
  if (stopAsked || !process.connected) void drain();
}
