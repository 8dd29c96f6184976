import pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../service/config";
import { migrate } from "../../../service/adapters/migrations";
import {
  RETENTION_LOCK_KEY,
  startUsageRetention,
  usageRowsExpired,
} from "../../../service/adapters/usage-retention";
import { insertUsageRows } from "../../../service/adapters/usage-writer";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";
import { usageRow } from "../../helpers/usage";

const log = pino({ level: "silent" });
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 24, 12, 0, 0);

let db: TestDatabase;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createTestDatabase("llmp_retention");
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  await migrate(pool, { log });
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

async function ids(): Promise<Set<string>> {
  const { rows } = await pool.query<{ id: string }>("SELECT request_id::text AS id FROM usage");
  return new Set(rows.map((r) => r.id));
}

async function expired(): Promise<number> {
  return (await usageRowsExpired.get()).values[0]?.value ?? 0;
}

describe("usage retention", () => {
  it("deletes rows older than the retention in batches and keeps the rest", async () => {
    await pool.query("DELETE FROM usage");
    const old = Array.from({ length: 23 }, (_, i) => usageRow({ createdAt: new Date(NOW - 31 * DAY - i * 1000) }));
    const edge = usageRow({ createdAt: new Date(NOW - 30 * DAY + 1000) });
    const recent = Array.from({ length: 5 }, (_, i) => usageRow({ createdAt: new Date(NOW - i * DAY) }));
    await insertUsageRows(pool, [...old, edge, ...recent]);
    const before = await expired();

    // Count the DELETE statements the pass sends (the pool and the database are real; only calls are counted).
    const deletes: number[] = [];
    const counting = {
      // A facade over a real pooled client: counts the DELETEs, leaves the pool's client untouched.
      connect: async () => {
        const client = await pool.connect();
        return {
          query: async (text: string, values?: unknown[]) => {
            const res = await client.query(text, values);
            if (text.includes("DELETE FROM usage")) deletes.push(res.rowCount ?? 0);
            return res;
          },
          release: (error?: Error | boolean) => client.release(error),
        };
      },
    } as unknown as pg.Pool;
    const retention = startUsageRetention({
      pool: counting,
      log,
      retentionDays: 30,
      batchRows: 5,
      pauseMs: 1,
      now: () => NOW,
    });
    try {
      expect(await retention.runOnce()).toEqual({ ran: true, deleted: 23 });
    } finally {
      await retention.stop();
    }
    // Batches of at most 5: 5 + 5 + 5 + 5 + 3, the last one short, so the pass ends there.
    expect(deletes).toEqual([5, 5, 5, 5, 3]);
    expect(await ids()).toEqual(new Set([edge, ...recent].map((r) => r.requestId)));
    expect((await expired()) - before).toBe(23);
  });

  it("runs in one process at a time: a pass elsewhere holding the lock makes this one skip", async () => {
    await pool.query("DELETE FROM usage");
    await insertUsageRows(pool, [usageRow({ createdAt: new Date(NOW - 40 * DAY) })]);
    const other = await pool.connect();
    await other.query("SELECT pg_advisory_lock($1)", [RETENTION_LOCK_KEY]);
    const retention = startUsageRetention({ pool, log, retentionDays: 30, now: () => NOW });
    try {
      expect(await retention.runOnce()).toEqual({ ran: false });
      expect((await ids()).size).toBe(1);
      // The holder goes away (its connection closes): the next pass runs.
      // The server drops the lock once it sees the disconnect, which takes a moment.
      other.release(true);
      let result = await retention.runOnce();
      for (let i = 0; i < 100 && !result.ran; i++) {
        await new Promise((r) => setTimeout(r, 50));
        result = await retention.runOnce();
      }
      expect(result).toEqual({ ran: true, deleted: 1 });
      expect((await ids()).size).toBe(0);
    } finally {
      await retention.stop();
    }
  });

  it("runs its first pass on its own soon after start, then keeps its schedule", async () => {
    await pool.query("DELETE FROM usage");
    await insertUsageRows(pool, [usageRow({ createdAt: new Date(NOW - 2 * DAY) })]);
    const retention = startUsageRetention({
      pool,
      log,
      retentionDays: 1,
      firstPassMs: 50,
      intervalMs: 100,
      now: () => NOW,
    });
    try {
      const deadline = Date.now() + 5000;
      while ((await ids()).size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      expect((await ids()).size).toBe(0);
      // A row that expires later is picked up by a later pass.
      await insertUsageRows(pool, [usageRow({ createdAt: new Date(NOW - 3 * DAY) })]);
      while ((await ids()).size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      expect((await ids()).size).toBe(0);
    } finally {
      await retention.stop();
    }
  });
});

describe("usage retention config", () => {
  const base = { DATABASE_URL: "postgres://x@127.0.0.1/x", PROXY_MASTER_KEY: "k".repeat(32) };
  it("is off by default, set by the file, overridden by USAGE_RETENTION_DAYS (0 = off)", () => {
    expect(loadConfig({ env: base }).usage.retentionDays).toBeNull();
    const file = "usage:\n  retention_days: 90\n";
    expect(loadConfig({ env: base, fileText: file }).usage.retentionDays).toBe(90);
    expect(loadConfig({ env: { ...base, USAGE_RETENTION_DAYS: "7" }, fileText: file }).usage.retentionDays).toBe(7);
    expect(loadConfig({ env: { ...base, USAGE_RETENTION_DAYS: "0" }, fileText: file }).usage.retentionDays).toBeNull();
  });

  it("names the key and the fix for a bad value", () => {
    expect(() => loadConfig({ env: base, fileText: "usage:\n  retention_days: 0\n" })).toThrow(
      /usage\.retention_days/,
    );
    expect(() => loadConfig({ env: { ...base, USAGE_RETENTION_DAYS: "ninety" } })).toThrow(/USAGE_RETENTION_DAYS/);
  });
});
