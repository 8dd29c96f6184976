/**
 * The cluster primary: runs migrations once (under an advisory lock, so replicas starting together apply them
 * once), replays spooled usage rows, starts the embedded services when nothing is configured, forks the workers,
 * replaces crashed ones, answers metrics requests with the aggregate of all workers, and drains on SIGTERM.
 */
import cluster, { type Worker } from "node:cluster";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { AggregatorRegistry } from "prom-client";
import type { Config } from "./config";
import { createLogger } from "./logger";
import { createPostgres } from "./adapters/postgres";
import { migrate } from "./adapters/migrations";
import { createUsageWriter } from "./adapters/usage-writer";
import type { EmbeddedPostgres } from "./adapters/pglite";
import { ensureMasterKeyFile } from "./adapters/master-key-file";
import { EXIT_CANNOT_START, lockDataDir, requireWritableDir, withDatabase } from "./lib/startup";

/** What the primary hands each worker over IPC (never through the environment or argv). */
export interface WorkerInit {
  type: "llmproxy:init";
  databaseUrl: string;
  masterKey: string;
  chromaUrl: string | null;
  /** Pool settings PGlite needs (one connection, never recycled); null for a real PostgreSQL. */
  poolOptions: { max?: number; idleTimeoutMs?: number; maxLifetimeSeconds?: number } | null;
  /** The config file's text as the primary read it at start (null without CONFIG_FILE); see main.ts. */
  configText: string | null;
}

/** One worker's metrics as prom-client's getMetricsAsJSON gives them. */
type WorkerMetrics = Parameters<typeof AggregatorRegistry.aggregate>[0][number];

/** How long a scrape waits for the workers' metrics (a Prometheus scrape times out after 10 s by default). */
const METRICS_COLLECT_MS = 3_000;

const CRASH_WINDOW_MS = 60_000;
const MAX_CRASHES_PER_WINDOW = 10;

export async function runPrimary(config: Config, configText?: string): Promise<void> {
  const log = createLogger(config.logLevel, { role: "primary" });
  const started = Date.now();
  const stops: Array<() => Promise<void>> = [];

  let masterKey = config.masterKey;
  let masterKeyFile: string | null = null;
  let databaseUrl = config.database.url;
  let poolOptions: WorkerInit["poolOptions"] = null;
  let chromaUrl = config.chroma.url;

  if (config.embedded) {
    // Before anything opens the embedded database: one process per DATA_DIR.
    const unlock = lockDataDir(config.dataDir);
    process.once("exit", unlock);
    stops.push(async () => unlock());
    if (!masterKey) {
      const mk = ensureMasterKeyFile(config.dataDir);
      masterKey = mk.key;
      masterKeyFile = mk.file;
    }
    // PGlite (WASM) and the Chroma starter load only for the embedded default.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { startEmbeddedPostgres } = require("./adapters/pglite") as typeof import("./adapters/pglite");
    const pg: EmbeddedPostgres = await startEmbeddedPostgres({ dataDir: config.dataDir, log });
    stops.push(() => pg.stop());
    databaseUrl = pg.url;
    poolOptions = pg.poolOptions;
    if (!chromaUrl) {
      const { startEmbeddedChroma } =
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        require("./adapters/embedded-chroma") as typeof import("./adapters/embedded-chroma");
      const chroma = await startEmbeddedChroma(config, log);
      if (chroma) {
        chromaUrl = chroma.url;
        stops.push(() => chroma.stop());
      }
    }
  }
  if (!databaseUrl || !masterKey)
    throw new Error("unreachable: config guarantees DATABASE_URL and the master key");

  // Migrations and the usage spool, once per pod, before any worker serves.
  requireWritableDir(
    path.join(config.dataDir, "usage-spool"),
    "the usage spool (usage rows kept across a stop while PostgreSQL is down)",
  );
  {
    const { pool } = createPostgres({
      url: databaseUrl,
      ca: config.database.ca,
      log,
      ...(poolOptions ?? {}),
      max: 1,
    });
    try {
      // A database that is not up yet (a pod started with it) is waited for; one that refuses us is a clear error.
      const result = await withDatabase(() => migrate(pool, { log }), {
        url: databaseUrl,
        waitSeconds: config.database.waitSeconds,
        log,
      });
      if (result.applied.length) log.info({ applied: result.applied }, "migrations applied");
      const writer = createUsageWriter({
        pool,
        log,
        spoolDir: path.join(config.dataDir, "usage-spool"),
        copy: !poolOptions, // PGlite's socket server does not speak COPY
      });
      // Told to stop while replaying (a rollout replacing a pod still starting): give the files back at once, so
      // they are not left claimed until the stale-claim wait, and exit as a stop during start-up does.
      const stopDuringReplay = (signal: NodeJS.Signals) => {
        writer.releaseClaims();
        log.info({ signal }, "stopped during the spool replay");
        process.exit(0);
      };
      process.once("SIGTERM", stopDuringReplay);
      process.once("SIGINT", stopDuringReplay);
      try {
        const replayed = await writer.replaySpool();
        if (replayed) log.info({ rows: replayed }, "replayed spooled usage rows");
      } finally {
        process.off("SIGTERM", stopDuringReplay);
        process.off("SIGINT", stopDuringReplay);
      }
      await writer.close();
    } finally {
      await pool.end().catch(() => undefined);
    }
  }

  /**
   * /metrics of the pod: every connected worker's registry, aggregated. A worker that does not answer within
   * METRICS_COLLECT_MS (stalled, or busy for seconds) is left out and counted in llmproxy_metrics_workers_missing,
   * instead of the whole scrape failing (prom-client's own cluster aggregation rejects when one worker is late).
   */
  const collections = new Map<string, (metrics: WorkerMetrics) => void>();
  const collectMetrics = async (): Promise<{ body: string; contentType: string }> => {
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected());
    const id = randomUUID();
    const answers: WorkerMetrics[] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, METRICS_COLLECT_MS);
      collections.set(id, (metrics) => {
        answers.push(metrics);
        if (answers.length === workers.length) {
          clearTimeout(timer);
          resolve();
        }
      });
      for (const w of workers) w.send({ type: "llmproxy:metrics-collect", id });
      if (workers.length === 0) {
        clearTimeout(timer);
        resolve();
      }
    });
    collections.delete(id);
    const aggregated = AggregatorRegistry.aggregate(answers);
    const missing = workers.length - answers.length;
    if (missing > 0) log.warn({ missing }, "metrics: workers that did not answer in time are left out");
    const body =
      (await aggregated.metrics()) +
      "# HELP llmproxy_metrics_workers_missing Workers left out of this scrape: they did not answer in time.\n" +
      "# TYPE llmproxy_metrics_workers_missing gauge\n" +
      `llmproxy_metrics_workers_missing ${missing}\n`;
    return { body, contentType: aggregated.contentType };
  };
  const init: WorkerInit = {
    type: "llmproxy:init",
    databaseUrl,
    masterKey,
    chromaUrl,
    poolOptions,
    configText: configText ?? null,
  };
  let draining = false;
  let readyCount = 0;
  // The port the workers listen on: PORT, or the one the system chose for PORT=0.
  let boundPort = config.server.port;
  const crashes: number[] = [];

  const fork = (): Worker => {
    const worker = cluster.fork();
    // A message to a worker that has just exited fails with EPIPE, emitted here: without a listener it would take
    // the primary (and every other worker) down.
    worker.on("error", (error: Error) =>
      log.warn({ worker: worker.id, err: error.message }, "worker channel error"),
    );
    worker.on("message", (msg: { type?: string; id?: string }) => {
      if (msg?.type === "llmproxy:init-request") {
        worker.send(init);
      } else if (msg?.type === "llmproxy:forget") {
        // An admin change on one worker: every worker drops its cached key lookups for it (see worker.ts).
        for (const w of Object.values(cluster.workers ?? {})) if (w !== worker) w?.send(msg);
      } else if (msg?.type === "llmproxy:ready") {
        readyCount++;
        const port = (msg as { port?: number }).port;
        if (typeof port === "number") boundPort = port;
        if (readyCount === config.server.workers) announce();
      } else if (msg?.type === "llmproxy:metrics-json") {
        collections.get(msg.id ?? "")?.((msg as { metrics?: WorkerMetrics }).metrics ?? []);
      } else if (msg?.type === "llmproxy:metrics-request") {
        collectMetrics()
          .then(({ body, contentType }) =>
            worker.send({ type: "llmproxy:metrics", id: msg.id, body, contentType }),
          )
          .catch((error: unknown) => {
            log.warn({ err: error }, "metrics aggregation failed");
            worker.send({ type: "llmproxy:metrics", id: msg.id, body: "", contentType: "text/plain" });
          });
      }
    });
    return worker;
  };

  cluster.on("exit", (worker, code, signal) => {
    if (draining) return;
    if (code === EXIT_CANNOT_START) {
      // A failure no replacement would get past (the listen address); the worker printed what to fix.
      log.fatal({ worker: worker.id }, "a worker cannot start (see the message above); stopping");
      void shutdown(1);
      return;
    }
    const now = Date.now();
    crashes.push(now);
    while (crashes.length && crashes[0] < now - CRASH_WINDOW_MS) crashes.shift();
    log.error({ worker: worker.id, code, signal }, "worker exited; starting a replacement");
    if (crashes.length > MAX_CRASHES_PER_WINDOW) {
      log.fatal({ crashes: crashes.length }, "workers keep crashing; giving up");
      void shutdown(1);
      return;
    }
    fork();
  });

  const announce = () => {
    const url = `http://${config.server.host === "0.0.0.0" ? "127.0.0.1" : config.server.host}:${boundPort}`;
    log.info({ url, workers: config.server.workers, startupMs: Date.now() - started }, "llm-proxy ready");
    if (!config.embedded) return;
    const mk = masterKeyFile ? `$(cat ${masterKeyFile})` : "$PROXY_MASTER_KEY";
    // The example's model: the built-in mock when it exists, else the config's first chat model.
    const chatModels = config.models.filter((m) => m.kind === "chat");
    const example = chatModels.find((m) => m.name === "mock-chat") ?? chatModels[0];
    process.stdout.write(
      [
        "",
        `  llm-proxy is running on ${url} (embedded default: PGlite under ${config.dataDir}, in-process limits, one worker)`,
        masterKeyFile
          ? `  Master key: stored in ${masterKeyFile} (mode 0600)`
          : "  Master key: from PROXY_MASTER_KEY",
        chromaUrl ? `  Knowledge base: Chroma at ${chromaUrl}` : "  Knowledge base: off (no Chroma)",
        "",
        example?.name === "mock-chat"
          ? "  Try it with the built-in mock model:"
          : `  Try it with ${example ? `the model ${example.name}` : "a model of your config"}:`,
        `    KEY=$(curl -s -X POST ${url}/internal/keys -H "Authorization: Bearer ${mk}" \\`,
        `          -H 'content-type: application/json' -d '{"name":"demo"}' | sed -E 's/.*"key":"([^"]+)".*/\\1/')`,
        `    curl -s ${url}/v1/chat/completions -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \\`,
        `          -d '{"model":${JSON.stringify(example?.name ?? "mock-chat")},"messages":[{"role":"user","content":"Hello!"}]}'`,
        "",
      ].join("\n") + "\n",
    );
  };

  const shutdown = async (code: number) => {
    if (draining) return;
    draining = true;
    log.info(code === 0 ? "SIGTERM: draining workers" : "stopping workers");
    // Workers already gone (several failing to start at once) are not waited for, nor written to.
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
    const exited = Promise.all(
      workers.map((w) => new Promise<void>((resolve) => w.once("exit", () => resolve()))),
    );
    for (const w of workers) if (w.isConnected()) w.send({ type: "llmproxy:drain" });
    const hardStop = setTimeout(
      () => {
        log.warn("workers did not stop in time; killing them");
        for (const w of workers) w.process.kill("SIGKILL");
      },
      (config.server.shutdownGraceSeconds + 10) * 1000,
    );
    await exited;
    clearTimeout(hardStop);
    for (const stop of stops.reverse())
      await stop().catch((error) => log.warn({ err: error }, "stop failed"));
    log.info("stopped");
    process.exit(code);
  };
  process.on("SIGTERM", () => void shutdown(0));
  process.on("SIGINT", () => void shutdown(0));
  // Node's default for SIGHUP (a closed terminal, or someone expecting a reload) kills the primary at once, and the
  // workers with it: requests cut off, usage rows lost. There is no reload: drain and stop like SIGTERM.
  process.on("SIGHUP", () => {
    log.warn(
      "SIGHUP: llm-proxy does not reload its configuration; draining and stopping (start it again to apply a change)",
    );
    void shutdown(0);
  });

  for (let i = 0; i < config.server.workers; i++) fork();
}
