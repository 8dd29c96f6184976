/**
 * Builds every adapter the app needs from the config: PostgreSQL stores and the usage writer, the provider
 * registry, the rate limiter and cache (Redis or in-process), the PII engine and the knowledge base.
 * Used by the worker process and by the test harness, so both run the same wiring.
 */
import path from "node:path";
import type { Logger } from "pino";
import type { AppDeps } from "./app";
import type { Config } from "./config";
import { createPostgres } from "./adapters/postgres";
import { createPgKeyStore, createPgTeamStore, createPgUsageReport } from "./adapters/pg-stores";
import { createPgAuditLog } from "./adapters/pg-audit";
import { createPgKbLock } from "./adapters/pg-kb-lock";
import { createUsageWriter, type UsageWriter } from "./adapters/usage-writer";
import { createSpendTracker } from "./adapters/spend";
import { startUsageRetention } from "./adapters/usage-retention";
import { createProviderRegistry } from "./providers/registry";
import { createRateLimiterFromConfig } from "./adapters/resilient-limiter";
import { createCacheFromConfig } from "./adapters/redis-cache";
import { createPiiEngine } from "./lib/pii";
import { createKnowledgeBaseFromConfig } from "./kb";
import { forgetKey, forgetTeam } from "./stages/auth";
import type pg from "pg";

export interface CreateDepsOptions {
  log: Logger;
  /** The database to use (DATABASE_URL, or the embedded PGlite's URL from the primary). */
  databaseUrl: string;
  /** Pool settings, given only for the embedded PGlite: one connection that is never recycled. */
  poolOptions?: { max?: number; idleTimeoutMs?: number; maxLifetimeSeconds?: number };
  isDraining(): boolean;
  /** True once the shutdown grace period ran out and open requests are being cut. */
  isCutOff?(): boolean;
  metricsText(): Promise<{ contentType: string; body: string }>;
  /** Usage flush interval (tests shorten it). */
  usageFlushIntervalMs?: number;
}

export interface BuiltDeps {
  deps: AppDeps;
  pool: pg.Pool;
  usageWriter: UsageWriter;
  /** Flush usage (spooling what cannot be written) and close every connection. */
  close(): Promise<void>;
}

export async function createDeps(config: Config, opts: CreateDepsOptions): Promise<BuiltDeps> {
  const { log } = opts;
  const { pool, db } = createPostgres({
    url: opts.databaseUrl,
    ca: config.database.ca,
    log,
    ...(opts.poolOptions ?? {}),
  });
  const usageWriter = createUsageWriter({
    pool,
    log,
    spoolDir: path.join(config.dataDir, "usage-spool"),
    // PGlite's socket server does not speak COPY.
    copy: !opts.poolOptions,
    ...(opts.usageFlushIntervalMs ? { flushIntervalMs: opts.usageFlushIntervalMs } : {}),
  });
  const spend = createSpendTracker({ pool, log, usage: usageWriter });
  const retention = config.usage.retentionDays
    ? startUsageRetention({ pool, log, retentionDays: config.usage.retentionDays })
    : null;
  const providers = createProviderRegistry(config);
  const pii = config.pii.enabled
    ? createPiiEngine({
        enabled: true,
        names: config.pii.names,
        entities: config.pii.entities,
        allowList: config.pii.allowList,
      })
    : null;
  const deps: AppDeps = {
    config,
    log,
    db,
    keys: createPgKeyStore(pool),
    teams: createPgTeamStore(pool),
    usageSink: usageWriter,
    spend,
    usageReport: createPgUsageReport(pool),
    audit: createPgAuditLog(pool),
    providers,
    rateLimiter: createRateLimiterFromConfig(config, log),
    cache: createCacheFromConfig(config, log),
    pii,
    // With PII on, what the knowledge base sends to the embedding model (chunks at ingestion, search queries) is
    // redacted like /v1/embeddings input: the embedding provider is as external as the chat one.
    kb: createKnowledgeBaseFromConfig(config, providers, log, {
      ...(pii ? { redact: (text: string) => pii.newSession().redact(text) } : {}),
      // Workers and replicas share the collection: their writes take a PostgreSQL advisory lock. Not on the embedded
      // PGlite (one connection, one process): there the knowledge base's in-process queue is enough.
      ...(opts.poolOptions ? {} : { lock: createPgKbLock({ pool }) }),
    }),
    isDraining: opts.isDraining,
    ...(opts.isCutOff ? { isCutOff: opts.isCutOff } : {}),
    metricsText: opts.metricsText,
    onKeyRevoked: forgetKey,
    onTeamChanged: forgetTeam,
  };
  return {
    deps,
    pool,
    usageWriter,
    async close() {
      await retention?.stop();
      await usageWriter.close();
      await Promise.allSettled([providers.close(), deps.rateLimiter?.close(), deps.cache?.close()]);
      await pool.end().catch(() => undefined);
    },
  };
}
