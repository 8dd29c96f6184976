/**
 * Start the proxy for a test: real PostgreSQL (a fresh database), the real wiring (service/deps.ts) and the real
 * Koa app on an ephemeral port. Only the LLM upstream is fake (see fake-upstream.ts).
 */
import http from "node:http";
import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import type pg from "pg";
import { buildApp, type AppDeps } from "../../service/app";
import { loadConfig, type Config } from "../../service/config";
import { createDeps } from "../../service/deps";
import { createLogger } from "../../service/logger";
import { migrate } from "../../service/adapters/migrations";
import { registry } from "../../service/metrics";
import { generateApiKey } from "../../service/lib/keys";
import type { UsageWriter } from "../../service/adapters/usage-writer";
import { createTestDatabase, type TestDatabase } from "./postgres";
import { startFakeUpstream, type FakeUpstream, type FakeUpstreamOptions } from "./fake-upstream";

export const TEST_MASTER_KEY = "test-master-key-0123456789abcdef0123456789";

export interface StartProxyOptions {
  /** YAML config file text (providers, models, limits …). */
  configYaml?: string;
  /** Extra environment (REDIS_URL, CACHE_ENABLED …). */
  env?: Record<string, string>;
  /** Adjust the built deps before the app is built (e.g. plug a limiter). */
  adjust?(deps: AppDeps, config: Config): void | Promise<void>;
}

export interface TestProxy {
  url: string;
  /** `${url}/v1` for the openai SDK. */
  baseURL: string;
  config: Config;
  deps: AppDeps;
  pool: pg.Pool;
  usageWriter: UsageWriter;
  masterKey: string;
  /** Create an API key directly in the store (scopes default to ["*"]). */
  createKey(opts?: {
    scopes?: string[];
    teamId?: string | null;
    expiresAt?: string | null;
    name?: string;
  }): Promise<{
    id: string;
    key: string;
  }>;
  /** Flush buffered usage rows and return all rows, oldest first. */
  usageRows(): Promise<any[]>;
  /** Wait until at least `n` usage rows exist (a stream's row is recorded when its socket closes). */
  waitForUsageRows(n: number, timeoutMs?: number): Promise<any[]>;
  close(): Promise<void>;
}

export async function startProxy(opts: StartProxyOptions = {}): Promise<TestProxy> {
  const database: TestDatabase = await createTestDatabase();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-data-"));
  const env = {
    DATABASE_URL: database.url,
    PROXY_MASTER_KEY: TEST_MASTER_KEY,
    DATA_DIR: dataDir,
    LOG_LEVEL: "silent",
    ...(opts.env ?? {}),
  };
  const config = loadConfig({ env, ...(opts.configYaml !== undefined ? { fileText: opts.configYaml } : {}) });
  const log = createLogger(config.logLevel);
  const built = await createDeps(config, {
    log,
    databaseUrl: database.url,
    isDraining: () => false,
    metricsText: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    usageFlushIntervalMs: 50,
  });
  await migrate(built.pool, { log });
  await opts.adjust?.(built.deps, config);
  const app = buildApp(built.deps);
  const server = http.createServer(app.callback());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    baseURL: `${url}/v1`,
    config,
    deps: built.deps,
    pool: built.pool,
    usageWriter: built.usageWriter,
    masterKey: TEST_MASTER_KEY,
    async createKey(o = {}) {
      const { key, hash, prefix } = generateApiKey();
      const record = await built.deps.keys.create({
        name: o.name ?? "test",
        teamId: o.teamId ?? null,
        scopes: o.scopes ?? ["*"],
        expiresAt: o.expiresAt ?? null,
        limits: { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null },
        hash,
        prefix,
      });
      return { id: record.id, key };
    },
    async usageRows() {
      await built.usageWriter.flush();
      const { rows } = await built.pool.query("SELECT * FROM usage ORDER BY created_at, request_id");
      return rows;
    },
    async waitForUsageRows(n, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await built.usageWriter.flush();
        const { rows } = await built.pool.query("SELECT * FROM usage ORDER BY created_at, request_id");
        if (rows.length >= n || Date.now() > deadline) return rows;
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await built.close();
      await database.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** YAML for a config routing `models` to fake upstream base URLs. */
export function upstreamConfig(
  providers: Record<string, string>,
  models: Array<{
    name: string;
    provider: string;
    model?: string;
    fallbacks?: string[];
    max_input_tokens?: number;
    pricing?: Record<string, number>;
    kind?: "chat" | "embedding";
  }>,
  extra = "",
): string {
  const lines = ["providers:"];
  for (const [name, baseUrl] of Object.entries(providers)) {
    lines.push(`  ${name}: { type: openai, base_url: "${baseUrl}", timeout_ms: 2000, max_retries: 0 }`);
  }
  lines.push("models:");
  for (const m of models) lines.push(`  - ${JSON.stringify(m)}`);
  return `${lines.join("\n")}\n${extra}`;
}

/**
 * A proxy in front of a fresh fake OpenAI-compatible upstream, with one API key (scopes `*`): `configYaml` gets the
 * upstream's base URL and returns the config file (usually through upstreamConfig).
 */
export async function startUpstreamProxy(
  configYaml: (upstreamBaseUrl: string) => string,
  env: Record<string, string> = {},
  upstreamOptions: FakeUpstreamOptions = {},
): Promise<{ upstream: FakeUpstream; proxy: TestProxy; key: string; close(): Promise<void> }> {
  const upstream = await startFakeUpstream(upstreamOptions);
  const proxy = await startProxy({ configYaml: configYaml(upstream.baseUrl), env });
  const { key } = await proxy.createKey();
  return {
    upstream,
    proxy,
    key,
    async close() {
      await proxy.close();
      await upstream.close();
    },
  };
}
