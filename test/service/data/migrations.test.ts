import { spawn } from "node:child_process";
import path from "node:path";
import pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MIGRATIONS, migrate } from "../../../service/adapters/migrations";
import { createPostgres } from "../../../service/adapters/postgres";
import { insertUsageRows } from "../../../service/adapters/usage-writer";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";
import { usageRow } from "../../helpers/usage";


/** Start one migrating process; resolves `ready` once it is connected and `done` with its JSON result. */
function startReplica(url: string) {
  const proc = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", child, url], {
    cwd: root,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  let onReady: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  proc.stdout.on("data", (d: Buffer) => {
    out += d.toString();
    if (out.startsWith("ready\n")) onReady();
  });
  proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const done = new Promise<{ pid: number; applied: number[] }>((resolve, reject) => {
    proc.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`migrating process exited with ${code}: ${err}`));
      resolve(JSON.parse(out.slice("ready\n".length).trim()));
    });
  });
  return { proc, ready, done, go: () => proc.stdin.end("go\n") };
}
const root = path.resolve(__dirname, "../../..");
const child = path.join(__dirname, "fixtures", "migrate-child.ts");
const log = pino({ level: "silent" });

describe("migrations", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("4 processes migrating one empty database at once: all succeed, each migration applied once", async () => {
    const replicas = Array.from({ length: 4 }, () => startReplica(db.url));
    await Promise.all(replicas.map((r) => r.ready));
    // All four are connected and waiting: release them together.
    replicas.forEach((r) => r.go());
    const outputs = await Promise.all(replicas.map((r) => r.done));
    expect(new Set(outputs.map((o) => o.pid)).size).toBe(4);
    // Every migration was applied by exactly one process; the other three found nothing to do.
    const allApplied = outputs.flatMap((o) => o.applied).sort((a, b) => a - b);
    expect(allApplied).toEqual(MIGRATIONS.map((m) => m.id));
    expect(outputs.filter((o) => o.applied.length > 0)).toHaveLength(1);

    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const rows = await client.query("SELECT id, count(*)::int AS n FROM schema_migrations GROUP BY id ORDER BY id");
      expect(rows.rows).toEqual(MIGRATIONS.map((m) => ({ id: m.id, n: 1 })));
      const tables = await client.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
      );
      expect(tables.rows.map((r) => r.table_name)).toEqual([
        "api_keys",
        "audit_events",
        "schema_migrations",
        "spend_monthly",
        "teams",
        "usage",
      ]);
    } finally {
      await client.end();
    }
  }, 180_000);

  it("is a no-op on an up-to-date database and restores the session's statement timeout", async () => {
    const { pool } = createPostgres({ url: db.url, log, max: 1, statementTimeoutMs: 12_345 });
    try {
      expect(await migrate(pool, { log })).toEqual({ applied: [] });
      // The same (only) pooled connection: migrate() lifted the timeout for the lock wait and must put it back.
      const { rows } = await pool.query("SHOW statement_timeout");
      expect(rows[0].statement_timeout).toBe("12345ms");
      const locks = await pool.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'");
      expect(locks.rows[0].n).toBe(0);
    } finally {
      await pool.end();
    }
  });

  it("a failing migration rolls back entirely and is not recorded", async () => {
    const { pool } = createPostgres({ url: db.url, log, max: 1 });
    try {
      const bad = [
        ...MIGRATIONS,
        { id: 999, name: "broken", sql: "CREATE TABLE half_done (id int); SELECT no_such_function();" },
      ];
      await expect(migrate(pool, { log, migrations: bad })).rejects.toThrow(/Migration 999 \(broken\) failed/);
      const t = await pool.query("SELECT to_regclass('half_done') AS t");
      expect(t.rows[0].t).toBeNull();
      const m = await pool.query("SELECT count(*)::int AS n FROM schema_migrations WHERE id = 999");
      expect(m.rows[0].n).toBe(0);
      // The lock was released with the discarded connection: a later migrate() does not wait.
      expect(await migrate(pool, { log })).toEqual({ applied: [] });
    } finally {
      await pool.end();
    }
  });

  it("spend_monthly starts from this and last month's usage rows already stored, then follows every insert, by UTC month", async () => {
    const fresh = await createTestDatabase();
    // A session time zone far from UTC (+14 h): months must still be UTC months.
    const { pool } = createPostgres({ url: `${fresh.url}?options=-c%20TimeZone%3DPacific%2FKiritimati`, log, max: 2 });
    try {
      const tz = await pool.query("SHOW TimeZone");
      expect(tz.rows[0].TimeZone).toBe("Pacific/Kiritimati");
      await migrate(pool, { log, migrations: MIGRATIONS.filter((m) => m.id < 8) });
      const key = "7d3c9a1e-0000-4000-8000-000000000001";
      const team = "7d3c9a1e-0000-4000-8000-000000000002";
      const now = new Date();
      const month = (back: number) => new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - back, 1));
      const label = (d: Date) => d.toISOString().slice(0, 7);
      const at = (d: Date, ms: number) => new Date(d.getTime() + ms);
      await insertUsageRows(pool, [
        // Three months back: older than the backfill reaches.
        usageRow({ keyId: key, teamId: team, costUsd: 9, createdAt: at(month(2), 3600_000) }),
        // The last millisecond of last month (already the 1st of this month in the session's time zone).
        usageRow({ keyId: key, teamId: team, costUsd: 0.75, createdAt: at(month(0), -1) }),
        usageRow({ keyId: key, teamId: team, costUsd: 0.25, createdAt: month(0) }),
        usageRow({ keyId: key, teamId: team, costUsd: 0.5, createdAt: at(month(0), 60_000) }),
        usageRow({ keyId: key, teamId: null, costUsd: null, createdAt: at(month(0), 60_000) }),
      ]);
      expect(await migrate(pool, { log, migrations: MIGRATIONS.filter((m) => m.id <= 8) })).toEqual({ applied: [8] });
      await insertUsageRows(pool, [
        usageRow({ keyId: key, teamId: team, costUsd: 2, createdAt: at(month(0), 120_000) }),
        usageRow({ keyId: key, teamId: team, costUsd: 0.125, createdAt: at(month(1), 86_400_000 * 3) }),
      ]);
      const { rows } = await pool.query(
        "SELECT to_char(month, 'YYYY-MM') AS month, scope, cost_usd::float8 AS usd FROM spend_monthly ORDER BY 1, 2",
      );
      expect(rows).toEqual([
        { month: label(month(1)), scope: "key", usd: 0.875 },
        { month: label(month(1)), scope: "team", usd: 0.875 },
        { month: label(month(0)), scope: "key", usd: 2.75 },
        { month: label(month(0)), scope: "team", usd: 2.75 },
      ]);
      // Deleting usage rows (retention) leaves the months' spend as it was.
      await pool.query("DELETE FROM usage");
      const after = await pool.query("SELECT sum(cost_usd)::float8 AS usd FROM spend_monthly");
      expect(after.rows[0].usd).toBe(7.25);
    } finally {
      await pool.end();
      await fresh.drop();
    }
  });

  it("rotation_root names each key's first key of its rotation chain, for the keys rotated before it existed", async () => {
    const fresh = await createTestDatabase();
    const { pool } = createPostgres({ url: fresh.url, log, max: 1 });
    try {
      await migrate(pool, { log, migrations: MIGRATIONS.filter((m) => m.id < 9) });
      // a → b → c (rotated twice), and d alone.
      const insert = async (name: string, from: string | null) =>
        (
          await pool.query(
            "INSERT INTO api_keys (name, key_hash, prefix, rotated_from) VALUES ($1, $2, 'sk-x', $3) RETURNING id",
            [name, `hash-${name}`, from],
          )
        ).rows[0].id as string;
      const a = await insert("a", null);
      const b = await insert("b", a);
      await insert("c", b);
      await insert("d", null);
      expect(await migrate(pool, { log })).toEqual({ applied: [9] });
      const { rows } = await pool.query("SELECT name, rotation_root FROM api_keys ORDER BY name");
      expect(rows).toEqual([
        { name: "a", rotation_root: null },
        { name: "b", rotation_root: a },
        { name: "c", rotation_root: a },
        { name: "d", rotation_root: null },
      ]);
    } finally {
      await pool.end();
      await fresh.drop();
    }
  });
});
