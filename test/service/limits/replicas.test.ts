/**
 * Across processes: three real proxy processes (dist/service/main.js, as in the image) share one PostgreSQL and one
 * Redis. A key limited to 50 requests/minute gets 200 concurrent requests spread over the three: exactly 50 are
 * admitted, 150 are rejected with Retry-After — the budget is one budget, not one per replica.
 */
import pg from "pg";
import Redis from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../../service/adapters/migrations";
import { createPgKeyStore } from "../../../service/adapters/pg-stores";
import { createLogger } from "../../../service/logger";
import { generateApiKey } from "../../../service/lib/keys";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";
import { TEST_MASTER_KEY, upstreamConfig } from "../../helpers/proxy";
import { spawnProxy, type SpawnedProxy } from "../../helpers/spawn-proxy";
import { startRedis, type ThrowawayRedis } from "../../helpers/redis";

describe("three proxy processes sharing one Redis", () => {
  let upstream: FakeUpstream;
  let db: TestDatabase;
  let pool: pg.Pool;
  let redis: ThrowawayRedis;
  let proxies: SpawnedProxy[] = [];
  let key: string;
  let keyId: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream({ latencyMs: 20, record: false });
    redis = await startRedis();
    db = await createTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    await migrate(pool, { log: createLogger("silent") });
    const generated = generateApiKey();
    const record = await createPgKeyStore(pool).create({
      name: "replicas",
      teamId: null,
      scopes: ["*"],
      expiresAt: null,
      limits: { requestsPerMinute: 50, tokensPerMinute: null, tokensPerDay: null },
      hash: generated.hash,
      prefix: generated.prefix,
    });
    key = generated.key;
    keyId = record.id;
    const configYaml = upstreamConfig({ fake: upstream.baseUrl }, [
      { name: "gpt-4o-mini", provider: "fake" },
    ]);
    proxies = await Promise.all(
      [0, 1, 2].map(() =>
        spawnProxy({
          env: {
            DATABASE_URL: db.url,
            PROXY_MASTER_KEY: TEST_MASTER_KEY,
            REDIS_URL: redis.url,
            WORKERS: "1",
            LOG_LEVEL: "warn",
          },
          configYaml,
        }),
      ),
    );
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop()));
    await pool?.end();
    await db?.drop();
    await redis?.stop();
    await upstream?.close();
  });

  it("200 concurrent requests against 50 requests/minute: exactly 50 admitted, 150 rejected with Retry-After", async () => {
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const res = await fetch(`${proxies[i % 3].url}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `hello ${i}` }] }),
        });
        const body = (await res.json()) as { error?: Record<string, unknown> };
        return { status: res.status, retryAfter: res.headers.get("retry-after"), body };
      }),
    );
    const admitted = results.filter((r) => r.status === 200);
    const rejected = results.filter((r) => r.status === 429);
    expect(admitted).toHaveLength(50);
    expect(rejected).toHaveLength(150);
    for (const r of rejected) {
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(Number(r.retryAfter)).toBeLessThanOrEqual(61);
      expect(r.body.error).toMatchObject({ code: "rate_limit_exceeded", param: "requests_per_minute" });
    }
    // Redis holds the one shared count (per-process limiting would have admitted up to 150).
    const client = new Redis(redis.url);
    try {
      expect(await client.hget(`{llmproxy:k:${keyId}}`, "R")).toBe("50");
    } finally {
      client.disconnect();
    }
  });
});
