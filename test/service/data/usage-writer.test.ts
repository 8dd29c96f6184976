import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../../service/adapters/migrations";
import { createPostgres } from "../../../service/adapters/postgres";
import { createUsageWriter, usageRowId, type UsageWriter } from "../../../service/adapters/usage-writer";
import { usagePending } from "../../../service/metrics";
import type { UsageRow } from "../../../service/ports";
import { createTestDatabase, startThrowawayPostgres, type TestDatabase, type ThrowawayPostgres } from "../../helpers/postgres";
import { usageRow } from "../../helpers/usage";

const log = pino({ level: "silent" });


async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-spool-"));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

async function idCounts(pool: pg.Pool, ids: string[]): Promise<Map<string, number>> {
  const { rows } = await pool.query(
    "SELECT request_id::text AS id, count(*)::int AS n FROM usage WHERE request_id = ANY($1::uuid[]) GROUP BY 1",
    [ids],
  );
  return new Map(rows.map((r) => [r.id as string, r.n as number]));
}

/** Every id present exactly once. */
async function expectExactlyOnce(pool: pg.Pool, ids: string[]): Promise<void> {
  const counts = await idCounts(pool, ids);
  expect(counts.size).toBe(ids.length);
  expect([...counts.values()].every((n) => n === 1)).toBe(true);
}

/**
 * A pool that counts the usage statements sent through it: INSERTs (pool.query) and COPYs (on a client from
 * pool.connect; the client is unwrapped again when released).
 */
function countingPool(pool: pg.Pool): { pool: pg.Pool; inserts: () => number; copies: () => number } {
  let inserts = 0;
  let copies = 0;
  const counting = Object.create(pool) as pg.Pool;
  counting.query = ((...args: Parameters<pg.Pool["query"]>) => {
    if (String(args[0]).includes("INSERT INTO usage")) inserts += 1;
    return (pool.query as (...a: unknown[]) => unknown)(...args);
  }) as pg.Pool["query"];
  counting.connect = (async () => {
    const client = await pool.connect();
    const { query, release } = client;
    client.query = ((...args: unknown[]) => {
      if (String((args[0] as { text?: string })?.text ?? args[0]).startsWith("COPY usage")) copies += 1;
      return (query as (...a: unknown[]) => unknown).apply(client, args);
    }) as typeof client.query;
    client.release = (error?: Error | boolean) => {
      client.query = query;
      client.release = release;
      release.call(client, error);
    };
    return client;
  }) as pg.Pool["connect"];
  return { pool: counting, inserts: () => inserts, copies: () => copies };
}

describe.each([
  { mode: "COPY", copy: true },
  { mode: "INSERT", copy: false },
])("usage writer on the shared PostgreSQL ($mode)", ({ copy }) => {
  let db: TestDatabase;
  let pool: pg.Pool;
  const writers: UsageWriter[] = [];
  const make = (opts: Partial<Parameters<typeof createUsageWriter>[0]> = {}) => {
    const w = createUsageWriter({ pool, log, spoolDir: tempDir(), flushIntervalMs: 60_000, copy, ...opts });
    writers.push(w);
    return w;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    ({ pool } = createPostgres({ url: db.url, log, max: 4 }));
    await migrate(pool, { log });
  });
  afterEach(async () => {
    await Promise.all(writers.splice(0).map((w) => w.close()));
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it("writes exactly one row per record(), with every field", async () => {
    const w = make();
    const keyId = crypto.randomUUID();
    const rows = [
      usageRow({ keyId, teamId: crypto.randomUUID(), stream: true, piiCounts: { EMAIL_ADDRESS: 2 } }),
      usageRow({ status: 502, errorCode: "upstream_error", servedModel: null, cacheHit: false }),
      usageRow({ cacheHit: true, promptTokens: 0, completionTokens: 0, requestedModel: "with\u0000nul" }),
    ];
    rows.forEach((r) => w.record(r));
    expect(w.pending()).toBe(3);
    await w.flush();
    expect(w.pending()).toBe(0);
    const { rows: stored } = await pool.query("SELECT * FROM usage WHERE request_id = ANY($1::uuid[])", [
      rows.map((r) => r.requestId),
    ]);
    expect(stored).toHaveLength(3);
    const first = stored.find((s) => s.request_id === rows[0].requestId);
    expect(first).toMatchObject({
      key_id: keyId,
      route: "chat",
      requested_model: "m",
      served_model: "m",
      provider: "mock",
      prompt_tokens: 11,
      completion_tokens: 7,
      latency_ms: 3,
      status: 200,
      error_code: null,
      stream: true,
      cache_hit: false,
      pii_counts: { EMAIL_ADDRESS: 2 },
    });
    expect(new Date(first.created_at).getTime()).toBe(rows[0].createdAt.getTime());
    expect(stored.find((s) => s.request_id === rows[1].requestId)).toMatchObject({ status: 502, error_code: "upstream_error" });
    expect(stored.find((s) => s.request_id === rows[2].requestId)).toMatchObject({ cache_hit: true, requested_model: "withnul" });
  });

  it("stores any text a client can send exactly, and costs and times without loss", async () => {
    const w = make();
    const awkward = [
      'quote " and backslash \\ and \\"',
      "{braces},commas, spaces and NULL",
      "NULL",
      "",
      "ünïcödé 模型 🚀",
      "new\nline\ttab",
    ];
    const rows = awkward.map((model, i) =>
      usageRow({
        requestedModel: model,
        errorCode: model || null,
        costUsd: [0.000_000_1, 1e-7, 12.5, 0, 1234567.123456789, null][i],
        piiCounts: { 'KEY "x"': i },
        createdAt: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, i)),
      }),
    );
    rows.forEach((r) => w.record(r));
    await w.flush();
    const { rows: stored } = await pool.query(
      "SELECT request_id, requested_model, error_code, cost_usd::text AS cost, pii_counts, created_at FROM usage WHERE request_id = ANY($1::uuid[])",
      [rows.map((r) => r.requestId)],
    );
    expect(stored).toHaveLength(rows.length);
    for (const [i, r] of rows.entries()) {
      const s = stored.find((x) => x.request_id === r.requestId);
      expect(s.requested_model).toBe(awkward[i]);
      expect(s.error_code).toBe(awkward[i] || null);
      expect(s.cost === null ? null : Number(s.cost)).toBe(r.costUsd);
      expect(s.pii_counts).toEqual({ 'KEY "x"': i });
      expect(new Date(s.created_at).getTime()).toBe(r.createdAt.getTime());
    }
  });

  it("batches: 1 200 rows in 3 statements of at most 500, and a full batch is written without waiting for the timer", async () => {
    const counting = countingPool(pool);
    const w = make({ pool: counting.pool, batchSize: 500 });
    const rows = Array.from({ length: 1200 }, () => usageRow());
    rows.forEach((r) => w.record(r));
    // 500 buffered rows start a write at once (the timer is 60 s away).
    await waitFor(() => w.pending() <= 200);
    await w.flush();
    expect(copy ? counting.copies() : counting.inserts()).toBe(3);
    expect(copy ? counting.inserts() : counting.copies()).toBe(0);
    await expectExactlyOnce(
      pool,
      rows.map((r) => r.requestId),
    );
  });

  it("keeps writing after a flush of an empty buffer", async () => {
    const w = make();
    await w.flush();
    await w.flush();
    const r = usageRow();
    w.record(r);
    await w.flush();
    expect(w.pending()).toBe(0);
    await expectExactlyOnce(pool, [r.requestId]);
  });

  it("the timer flushes in the background", async () => {
    const w = make({ flushIntervalMs: 50 });
    const r = usageRow();
    w.record(r);
    await waitFor(async () => (await idCounts(pool, [r.requestId])).get(r.requestId) === 1);
    expect(w.pending()).toBe(0);
  });

  it("the same request id recorded twice is stored once; non-uuid request ids get a stable uuid", async () => {
    const w = make();
    const r = usageRow();
    w.record(r);
    w.record({ ...r, latencyMs: 999 });
    w.record(usageRow({ requestId: "client-supplied-id-1" }));
    await w.flush();
    await expectExactlyOnce(pool, [r.requestId, usageRowId("client-supplied-id-1")]);
    expect(usageRowId("client-supplied-id-1")).toBe(usageRowId("client-supplied-id-1"));
    expect(usageRowId("client-supplied-id-1")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it("a batch holding rows already stored writes the new ones and stores the old ones once", async () => {
    const counting = countingPool(pool);
    const w = make({ pool: counting.pool });
    const stored = [usageRow(), usageRow()];
    stored.forEach((r) => w.record(r));
    await w.flush();
    // A retry of a batch whose first write did land, mixed with new rows (as after a lost COMMIT acknowledgement).
    const fresh = [usageRow(), usageRow(), usageRow()];
    [fresh[0], stored[0], fresh[1], stored[1], fresh[2]].forEach((r) => w.record(r));
    await w.flush();
    expect(w.pending()).toBe(0);
    await expectExactlyOnce(pool, [...stored, ...fresh].map((r) => r.requestId));
    // COPY has no ON CONFLICT: the second batch failed whole on the unique key and went again as an INSERT.
    if (copy) expect([counting.copies(), counting.inserts()]).toEqual([2, 1]);
  });

  it("keeps spend_monthly equal to the usage rows' cost per key, team and UTC month, each row counted once", async () => {
    const key = crypto.randomUUID();
    const team = crypto.randomUUID();
    const lone = crypto.randomUUID(); // a key without a team
    const march = new Date("2026-03-31T23:59:59.999Z");
    const april = new Date("2026-04-01T00:00:00.000Z");
    const w = make();
    const first = [
      usageRow({ keyId: key, teamId: team, costUsd: 0.25, createdAt: march }),
      usageRow({ keyId: key, teamId: team, costUsd: 0.5, createdAt: april }),
      usageRow({ keyId: lone, costUsd: 1.125, createdAt: april }),
      usageRow({ keyId: key, teamId: team, costUsd: null, createdAt: april }), // price unknown
      usageRow({ keyId: key, teamId: team, costUsd: 0, createdAt: april }), // a cache hit
    ];
    first.forEach((r) => w.record(r));
    await w.flush();
    // A batch with rows already stored (the COPY fails on the unique key and goes again as an INSERT that skips
    // them): only the new rows may add to the totals.
    const again = [usageRow({ keyId: key, teamId: team, costUsd: 2, createdAt: april }), first[1], first[0]];
    again.forEach((r) => w.record(r));
    await w.flush();
    expect(w.pending()).toBe(0);
    const { rows } = await pool.query(
      `SELECT to_char(month, 'YYYY-MM') AS month, scope, id::text, cost_usd::float8 AS usd FROM spend_monthly
        WHERE id = ANY($1::uuid[]) ORDER BY month, scope, usd`,
      [[key, team, lone]],
    );
    expect(rows).toEqual([
      { month: "2026-03", scope: "key", id: key, usd: 0.25 },
      { month: "2026-03", scope: "team", id: team, usd: 0.25 },
      { month: "2026-04", scope: "key", id: lone, usd: 1.125 },
      { month: "2026-04", scope: "key", id: key, usd: 2.5 },
      { month: "2026-04", scope: "team", id: team, usd: 2.5 },
    ]);
  });

  it("writers of several replicas adding to the same team's spend at once lose none of it", async () => {
    const team = crypto.randomUUID();
    const keys = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
    // Each writer on its own pool, as on separate replicas; every batch touches the team and all three keys.
    const pools = keys.map(() => createPostgres({ url: db.url, log, max: 2 }).pool);
    try {
      const ws = pools.map((p) => make({ pool: p, batchSize: 7 }));
      let expected = 0;
      for (let i = 0; i < 210; i++) {
        const usd = (i % 5) + 0.5;
        expected += usd;
        ws[i % 3].record(usageRow({ keyId: keys[(i + (i % 3)) % 3], teamId: team, costUsd: usd }));
      }
      await Promise.all(ws.map((w) => w.flush()));
      const { rows } = await pool.query(
        "SELECT scope, sum(cost_usd)::float8 AS usd FROM spend_monthly WHERE id = ANY($1::uuid[]) GROUP BY scope ORDER BY scope",
        [[team, ...keys]],
      );
      expect(rows).toEqual([
        { scope: "key", usd: expected },
        { scope: "team", usd: expected },
      ]);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it("a row PostgreSQL rejects as data is dropped alone; the rest of its batch is written", async () => {
    const w = make();
    const good1 = usageRow();
    const bad = usageRow({ piiCounts: { "bad\u0000key": 1 } });
    const good2 = usageRow();
    [good1, bad, good2].forEach((r) => w.record(r));
    await w.flush();
    expect(w.pending()).toBe(0);
    const counts = await idCounts(pool, [good1.requestId, bad.requestId, good2.requestId]);
    expect(counts.get(good1.requestId)).toBe(1);
    expect(counts.get(good2.requestId)).toBe(1);
    expect(counts.has(bad.requestId)).toBe(false);
  });
});

describe("usage writer through a PostgreSQL outage (throwaway server)", () => {
  let server: ThrowawayPostgres;
  let pool: pg.Pool;

  beforeAll(async () => {
    server = await startThrowawayPostgres();
    ({ pool } = createPostgres({ url: server.url, log, max: 2, connectionTimeoutMs: 2_000 }));
    await migrate(pool, { log });
  });
  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  it("ping() answers false, without hanging, when PostgreSQL is down or frozen", async () => {
    const { pool: p, db } = createPostgres({ url: server.url, log, max: 1, pingTimeoutMs: 500, connectionTimeoutMs: 10_000 });
    try {
      expect(await db.ping()).toBe(true);
      server.pause();
      try {
        const started = Date.now();
        // The pooled connection's backend still answers; a fresh pool must connect to the frozen postmaster.
        const { pool: p2, db: db2 } = createPostgres({ url: server.url, log, max: 1, pingTimeoutMs: 500, connectionTimeoutMs: 10_000 });
        expect(await db2.ping()).toBe(false);
        expect(Date.now() - started).toBeLessThan(5_000);
        void p2.end().catch(() => undefined);
      } finally {
        server.resume();
      }
      await server.stop();
      expect(await db.ping()).toBe(false);
      await server.start();
      expect(await db.ping()).toBe(true);
    } finally {
      await p.end().catch(() => undefined);
    }
  });

  it("loses nothing: rows recorded while PostgreSQL is down are written when it is back", async () => {
    const w = createUsageWriter({ pool, log, spoolDir: tempDir(), flushIntervalMs: 50, maxBackoffMs: 300 });
    try {
      const before = Array.from({ length: 20 }, () => usageRow());
      before.forEach((r) => w.record(r));
      await w.flush();
      expect(w.pending()).toBe(0);

      await server.stop();
      const during = Array.from({ length: 150 }, () => usageRow());
      for (const r of during) {
        w.record(r);
        if (during.indexOf(r) % 50 === 0) await new Promise((res) => setTimeout(res, 100));
      }
      // The writer has tried (and failed) meanwhile; flush() resolves with the rows still buffered.
      await w.flush();
      expect(w.pending()).toBe(150);
      expect((await usagePending.get()).values[0].value).toBeGreaterThanOrEqual(150);

      await server.start();
      await waitFor(() => w.pending() === 0);
      await expectExactlyOnce(pool, [...before, ...during].map((r) => r.requestId));
    } finally {
      await w.close();
    }
  });

  it("close() during an outage spools to disk; replaySpool() on a new writer writes every row exactly once", async () => {
    const spoolDir = tempDir();
    const w1 = createUsageWriter({ pool, log, spoolDir, flushIntervalMs: 50, closeTimeoutMs: 1_000 });
    const written = Array.from({ length: 10 }, () => usageRow());
    written.forEach((r) => w1.record(r));
    await w1.flush();

    // A fast stop: this throwaway server runs with synchronous_commit=off, so a crash could lose committed rows.
    await server.stop();
    const stranded = Array.from({ length: 40 }, () => usageRow());
    stranded.forEach((r) => w1.record(r));
    // A row already in PostgreSQL and recorded again: the replay must not duplicate it.
    w1.record(written[0]);
    await w1.close();
    expect(w1.pending()).toBe(0);

    const files = fs.readdirSync(spoolDir).filter((f) => f.endsWith(".jsonl"));
    expect(files).toHaveLength(1);
    const lines = fs.readFileSync(path.join(spoolDir, files[0]), "utf8").trim().split("\n");
    expect(lines).toHaveLength(41);
    expect(JSON.parse(lines[0]).requestId).toBe(stranded[0].requestId);

    await server.start();
    const w2 = createUsageWriter({ pool, log, spoolDir, flushIntervalMs: 60_000 });
    try {
      expect(await w2.replaySpool()).toBe(41);
      expect(fs.readdirSync(spoolDir)).toEqual([]);
      await expectExactlyOnce(pool, [...written, ...stranded].map((r) => r.requestId));
      // Nothing left: a second replay finds no files.
      expect(await w2.replaySpool()).toBe(0);
    } finally {
      await w2.close();
    }
  });

  it("close() gives up after closeTimeoutMs when PostgreSQL hangs, and spools the rows", async () => {
    const spoolDir = tempDir();
    // A pool of its own: no open connection, so every attempt has to connect to the frozen postmaster.
    const { pool: fresh } = createPostgres({ url: server.url, log, max: 1, connectionTimeoutMs: 10_000 });
    const w = createUsageWriter({ pool: fresh, log, spoolDir, closeTimeoutMs: 500 });
    server.pause();
    try {
      const rows = Array.from({ length: 5 }, () => usageRow());
      rows.forEach((r) => w.record(r));
      const started = Date.now();
      await w.close();
      expect(Date.now() - started).toBeLessThan(5_000);
      const files = fs.readdirSync(spoolDir).filter((f) => f.endsWith(".jsonl"));
      expect(files).toHaveLength(1);
      const spooled = fs
        .readFileSync(path.join(spoolDir, files[0]), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).requestId);
      expect(spooled).toEqual(rows.map((r) => r.requestId));
    } finally {
      server.resume();
      await fresh.end().catch(() => undefined);
    }
  });

  it("replicas replaying one shared spool directory together never replay a file twice", async () => {
    const spoolDir = tempDir();
    await server.stop();
    const all: UsageRow[] = [];
    // Five writers shut down during the outage: five spool files.
    for (let i = 0; i < 5; i++) {
      const w = createUsageWriter({ pool, log, spoolDir, closeTimeoutMs: 500 });
      const rows = Array.from({ length: 30 }, () => usageRow());
      rows.forEach((r) => w.record(r));
      all.push(...rows);
      await w.close();
    }
    expect(fs.readdirSync(spoolDir).filter((f) => f.endsWith(".jsonl"))).toHaveLength(5);
    await server.start();

    const replicas = Array.from({ length: 3 }, () => createUsageWriter({ pool, log, spoolDir }));
    try {
      const counts = await Promise.all(replicas.map((w) => w.replaySpool()));
      // Each file was read by exactly one replica.
      expect(counts.reduce((a, b) => a + b, 0)).toBe(150);
      expect(fs.readdirSync(spoolDir)).toEqual([]);
      await expectExactlyOnce(pool, all.map((r) => r.requestId));
    } finally {
      await Promise.all(replicas.map((w) => w.close()));
    }
  });

  /** `n` rows a writer spooled because PostgreSQL was down when it closed; the server is up again after. */
  async function spooledDuringOutage(spoolDir: string, n: number): Promise<UsageRow[]> {
    await server.stop();
    const w = createUsageWriter({ pool, log, spoolDir, closeTimeoutMs: 500 });
    const rows = Array.from({ length: n }, () => usageRow());
    rows.forEach((r) => w.record(r));
    await w.close();
    await server.start();
    return rows;
  }

  /**
   * `check` with a writer on a pool of its own (the shared pool may still hold a connection a restart ended), then
   * everything closed.
   */
  async function withOwnWriter(
    spoolDir: string,
    check: (w: UsageWriter, pool: pg.Pool) => Promise<void>,
  ): Promise<void> {
    const { pool: own } = createPostgres({ url: server.url, log, max: 1 });
    const w = createUsageWriter({ pool: own, log, spoolDir });
    try {
      await check(w, own);
    } finally {
      await w.close();
      await own.end().catch(() => undefined);
    }
  }

  it("spoolNow() (a worker dying of an uncaught exception) writes the unwritten rows to the spool at once", async () => {
    const spoolDir = tempDir();
    const w = createUsageWriter({ pool, log, spoolDir, flushIntervalMs: 60_000 });
    const rows = Array.from({ length: 12 }, () => usageRow());
    rows.forEach((r) => w.record(r));
    expect(w.spoolNow()).toBe(12);
    expect(w.pending()).toBe(0);
    expect(w.spoolNow()).toBe(0); // nothing twice
    const files = fs.readdirSync(spoolDir);
    expect(files).toHaveLength(1);
    expect(fs.readFileSync(path.join(spoolDir, files[0]), "utf8").trim().split("\n")).toHaveLength(12);
    await w.close();
    await withOwnWriter(spoolDir, async (replayer, own) => {
      expect(await replayer.replaySpool()).toBe(12);
      await expectExactlyOnce(own, rows.map((r) => r.requestId));
    });
  });

  it("a claim left by a replayer that was killed is replayed once untouched for 2 min; a live one is left alone", async () => {
    const spoolDir = tempDir();
    const rows = await spooledDuringOutage(spoolDir, 20);
    const [file] = fs.readdirSync(spoolDir);
    // Another replica's claim, as it names it; its heartbeat keeps the mtime fresh.
    const claimed = path.join(spoolDir, `${file}.claimed-${Date.now() - 20 * 60_000}-4242-abcdef`);
    fs.renameSync(path.join(spoolDir, file), claimed);
    await withOwnWriter(spoolDir, async (replayer, own) => {
      // Claimed long ago by its name, but touched just now: alive, not taken.
      expect(await replayer.replaySpool()).toBe(0);
      expect(fs.existsSync(claimed)).toBe(true);
      // No heartbeat for 3 minutes: its replayer is gone.
      const old = new Date(Date.now() - 3 * 60_000);
      fs.utimesSync(claimed, old, old);
      expect(await replayer.replaySpool()).toBe(20);
      expect(fs.readdirSync(spoolDir)).toEqual([]);
      await expectExactlyOnce(own, rows.map((r) => r.requestId));
    });
  });

  it("releaseClaims() during a replay gives the file back under its name; the next replay writes it once", async () => {
    const spoolDir = tempDir();
    const rows = await spooledDuringOutage(spoolDir, 20);
    const [file] = fs.readdirSync(spoolDir);
    const { pool: own } = createPostgres({ url: server.url, log, max: 1, connectionTimeoutMs: 30_000 });
    const first = createUsageWriter({ pool: own, log, spoolDir });
    // The replay hangs on a frozen server, its file claimed.
    server.pause();
    const replay = first.replaySpool().catch(() => -1);
    try {
      await waitFor(() => fs.readdirSync(spoolDir).some((f) => f.includes(".claimed-")));
      first.releaseClaims();
      expect(fs.readdirSync(spoolDir)).toEqual([file]);
    } finally {
      server.resume();
    }
    await replay;
    await first.close();
    await own.end().catch(() => undefined);
    await withOwnWriter(spoolDir, async (second, again) => {
      expect(await second.replaySpool()).toBe(20);
      expect(fs.readdirSync(spoolDir)).toEqual([]);
      await expectExactlyOnce(again, rows.map((r) => r.requestId));
    });
  });

  it("a long outage is bounded in memory: the oldest rows move to the spool and come back after recovery", async () => {
    const spoolDir = tempDir();
    const w = createUsageWriter({
      pool,
      log,
      spoolDir,
      flushIntervalMs: 50,
      maxBackoffMs: 300,
      batchSize: 10,
      maxBuffered: 30,
    });
    try {
      await server.stop();
      const rows = Array.from({ length: 100 }, () => usageRow());
      rows.forEach((r) => w.record(r));
      expect(w.pending()).toBeLessThanOrEqual(30);
      expect(fs.readdirSync(spoolDir).some((f) => f.endsWith(".jsonl"))).toBe(true);

      await server.start();
      await waitFor(async () => w.pending() === 0 && fs.readdirSync(spoolDir).length === 0);
      await expectExactlyOnce(pool, rows.map((r) => r.requestId));
    } finally {
      await w.close();
    }
  });
});
