/**
 * Monthly spend budgets per key and per team: set through the admin API, enforced before the upstream call with
 * 429 insufficient_quota, counted from PostgreSQL's usage rows plus what the process itself served.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import net from "node:net";
import type pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../../service/adapters/migrations";
import { createPostgres } from "../../../service/adapters/postgres";
import { createSpendTracker, monthStart, spendReadErrors } from "../../../service/adapters/spend";
import { budgetRejections } from "../../../service/stages/budget";
import { createUsageWriter, insertUsageRows } from "../../../service/adapters/usage-writer";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";
import { startProxy, type TestProxy } from "../../helpers/proxy";
import { usageRow } from "../../helpers/usage";
import { leaveStreamAfter } from "../../helpers/stream";

const log = pino({ level: "silent" });

describe("spend tracker (PostgreSQL)", () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  beforeAll(async () => {
    db = await createTestDatabase();
    ({ pool } = createPostgres({ url: db.url, log }));
    await migrate(pool, { log });
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it("sums this UTC month's rows, adds unwritten and own spend, and reads again when the sum is old", async () => {
    const keyId = crypto.randomUUID();
    const teamId = crypto.randomUUID();
    let clock = Date.UTC(2041, 4, 20, 12);
    const month = monthStart(clock);
    await insertUsageRows(pool, [
      usageRow({ keyId, teamId, costUsd: 2, createdAt: new Date(month) }),
      usageRow({ keyId, teamId, costUsd: 0.5, createdAt: new Date(month + 3600_000) }),
      // Last month, another key of the team, and a row without a price.
      usageRow({ keyId, teamId, costUsd: 100, createdAt: new Date(month - 1) }),
      usageRow({ keyId: crypto.randomUUID(), teamId, costUsd: 1, createdAt: new Date(month + 60_000) }),
      usageRow({ keyId, teamId, costUsd: null, createdAt: new Date(month + 60_000) }),
    ]);
    let unwritten = 0.25;
    const tracker = createSpendTracker({
      pool,
      log,
      refreshMs: 1000,
      now: () => clock,
      usage: {
        pendingCosts: (scope, since) =>
          new Map(scope === "key" && since.getTime() === month ? [[keyId, unwritten]] : []),
      },
    });
    // Requests arriving together before the first read is in all wait for it: none is told "nothing spent".
    const burst = await Promise.all([1, 2, 3].map(() => tracker.spent("key", keyId)));
    for (const spent of burst) expect(spent).toBeCloseTo(2.75, 9);
    expect(await tracker.spent("team", teamId)).toBeCloseTo(3.5, 9);
    // The admin API's figures: the same stored and unwritten spend, many ids in one query, 0 for an unknown one.
    const stranger = crypto.randomUUID();
    const keys = await tracker.monthToDate("key", [keyId, stranger]);
    expect(keys.get(keyId)).toBeCloseTo(2.75, 9);
    expect(keys.get(stranger)).toBe(0);
    expect((await tracker.monthToDate("team", [teamId])).get(teamId)).toBeCloseTo(3.5, 9);

    // What this process serves counts at once, for the key and its team.
    tracker.add(keyId, teamId, 1);
    expect(await tracker.spent("key", keyId)).toBeCloseTo(3.75, 9);
    expect(await tracker.spent("team", teamId)).toBeCloseTo(4.5, 9);

    // Another replica's rows arrive; the sum is read again once it is a second old (in the background).
    await insertUsageRows(pool, [
      usageRow({ keyId, teamId, costUsd: 10, createdAt: new Date(month + 7200_000) }),
    ]);
    unwritten = 0; // the earlier unwritten row and this process's 1.00 were written meanwhile
    await insertUsageRows(pool, [
      usageRow({ keyId, teamId, costUsd: 1.25, createdAt: new Date(month + 7300_000) }),
    ]);
    clock += 1500;
    await tracker.spent("key", keyId); // starts the read
    await new Promise((r) => setTimeout(r, 200));
    expect(await tracker.spent("key", keyId)).toBeCloseTo(2.5 + 10 + 1.25, 9);

    // A new month starts from that month's rows.
    clock = Date.UTC(2041, 5, 1, 0, 0, 1);
    expect(await tracker.spent("key", keyId)).toBe(0);
  });
});

const counted = async (
  counter: { get(): Promise<{ values: Array<{ value: number; labels: object }> }> },
  labels = {},
) =>
  (await counter.get()).values
    .filter((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x))
    .reduce((n, v) => n + v.value, 0);

describe("spend tracker without PostgreSQL", () => {
  it("a failed read is counted, and the next one waits 30 s", async () => {
    // A port nobody listens on: the connection is refused at once.
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const { pool } = createPostgres({ url: `postgres://postgres@127.0.0.1:${port}/x`, log });
    try {
      let clock = Date.UTC(2041, 4, 20, 12);
      const tracker = createSpendTracker({ pool, log, now: () => clock });
      const before = await counted(spendReadErrors);
      const keyId = crypto.randomUUID();
      expect(await tracker.spent("key", keyId)).toBe(0);
      expect(await counted(spendReadErrors)).toBe(before + 1);
      clock += 29_000;
      await tracker.spent("key", keyId);
      await new Promise((r) => setTimeout(r, 50));
      expect(await counted(spendReadErrors)).toBe(before + 1);
      clock += 2_000;
      await tracker.spent("key", keyId); // tried again in the background
      await new Promise((r) => setTimeout(r, 200));
      expect(await counted(spendReadErrors)).toBe(before + 2);
    } finally {
      await pool.end().catch(() => undefined);
    }
  });

  it("waits at most a second for a first read, then counts what the process served, without waiting again", async () => {
    // A frozen PostgreSQL: connections are accepted and never answered.
    const frozen = net.createServer(() => undefined);
    await new Promise<void>((resolve) => frozen.listen(0, "127.0.0.1", resolve));
    const port = (frozen.address() as net.AddressInfo).port;
    const { pool } = createPostgres({
      url: `postgres://postgres@127.0.0.1:${port}/x`,
      log,
      connectionTimeoutMs: 10_000,
    });
    try {
      const tracker = createSpendTracker({ pool, log });
      const keyId = crypto.randomUUID();
      const started = Date.now();
      expect(await tracker.spent("key", keyId)).toBe(0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      expect(Date.now() - started).toBeLessThan(3_000);
      tracker.add(keyId, null, 4.5);
      const again = Date.now();
      expect(await tracker.spent("key", keyId)).toBe(4.5);
      expect(Date.now() - again).toBeLessThan(500);
    } finally {
      void pool.end().catch(() => undefined); // its connect attempt still hangs: do not wait for it
      frozen.close();
    }
  });
});

describe("unwritten spend", () => {
  it("rows spooled to disk during an outage still count against budgets", async () => {
    const { pool } = createPostgres({
      url: "postgres://postgres@127.0.0.1:1/x",
      log,
      connectionTimeoutMs: 200,
    });
    const spoolDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-spend-"));
    const writer = createUsageWriter({
      pool,
      log,
      spoolDir,
      flushIntervalMs: 60_000,
      batchSize: 1,
      maxBuffered: 1,
    });
    try {
      const keyId = crypto.randomUUID();
      for (const cost of [1, 2, 4]) writer.record(usageRow({ keyId, costUsd: cost }));
      expect(fs.readdirSync(spoolDir).length).toBeGreaterThan(0); // over maxBuffered: spooled
      expect(writer.pendingCosts!("key", new Date(0))).toEqual(new Map([[keyId, 7]]));
      expect(writer.pendingCosts!("key", new Date(Date.now() + 60_000)).size).toBe(0);
    } finally {
      await writer.close().catch(() => undefined);
      await pool.end().catch(() => undefined);
      fs.rmSync(spoolDir, { recursive: true, force: true });
    }
  });
});

describe("monthly budgets through the proxy", () => {
  let upstream: FakeUpstream;
  let slow: FakeUpstream;
  let proxy: TestProxy;
  // The fake upstream reports 11 prompt and 7 completion tokens: at 0.1 USD a token, 1.80 USD a request.
  beforeAll(async () => {
    upstream = await startFakeUpstream();
    slow = await startFakeUpstream({ chunkDelayMs: 100 });
    proxy = await startProxy({
      configYaml: `providers:
  up: { type: openai, base_url: "${upstream.baseUrl}", max_retries: 0 }
  slow: { type: openai, base_url: "${slow.baseUrl}", max_retries: 0 }
models:
  - { name: m-slow, provider: slow, pricing: { input_per_mtok: 100000, output_per_mtok: 100000 } }
  - { name: m, provider: up, pricing: { input_per_mtok: 100000, output_per_mtok: 100000 } }
  - { name: free, provider: up }
`,
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
    await slow?.close();
  });

  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${proxy.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${proxy.masterKey}`, "content-type": "application/json" },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  const chat = async (key: string, model = "m") => {
    const res = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  it("the admin API sets, shows, changes and clears a budget, and names a bad one", async () => {
    const team = await admin("POST", "/internal/teams", { name: "budget-admin", budget_usd_per_month: 100 });
    expect(team.status).toBe(201);
    expect(team.body.budget_usd_per_month).toBe(100);
    const key = await admin("POST", "/internal/keys", {
      name: "k",
      team_id: team.body.id,
      budget_usd_per_month: 2.5,
    });
    expect(key.body.budget_usd_per_month).toBe(2.5);
    expect((await admin("GET", `/internal/keys/${key.body.id}`)).body.budget_usd_per_month).toBe(2.5);
    expect(
      (await admin("PATCH", `/internal/keys/${key.body.id}`, { name: "k2" })).body.budget_usd_per_month,
    ).toBe(2.5);
    expect(
      (await admin("PATCH", `/internal/keys/${key.body.id}`, { budget_usd_per_month: null })).body
        .budget_usd_per_month,
    ).toBeNull();
    expect(
      (await admin("PATCH", `/internal/teams/${team.body.id}`, { budget_usd_per_month: 0.01 })).body
        .budget_usd_per_month,
    ).toBe(0.01);
    for (const bad of [-1, "10", 2e9]) {
      const res = await admin("PATCH", `/internal/teams/${team.body.id}`, { budget_usd_per_month: bad });
      expect(res.status).toBe(400);
      expect(res.body.error.param).toBe("budget_usd_per_month");
    }
  });

  it("a key's budget: served while under it, then 429 insufficient_quota without calling the upstream", async () => {
    const refusedBefore = await counted(budgetRejections, { scope: "key" });
    const key = await admin("POST", "/internal/keys", { name: "capped", budget_usd_per_month: 3 });
    expect((await chat(key.body.key)).status).toBe(200); // 0.00 spent
    expect((await chat(key.body.key)).status).toBe(200); // 1.80 spent
    const calls = upstream.requests.length;
    const refused = await chat(key.body.key); // 3.60 spent
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({
      type: "insufficient_quota",
      code: "budget_exceeded",
      param: "key.budget_usd_per_month",
    });
    expect(refused.body.error.message).toMatch(
      /monthly budget of USD 3\.00 is spent \(USD 3\.60 this month\)/,
    );
    expect(upstream.requests.length).toBe(calls);
    // Requests without a price cost nothing against a budget, but a spent budget refuses them too.
    expect((await chat(key.body.key, "free")).status).toBe(429);
    // Raised: served again.
    await admin("PATCH", `/internal/keys/${key.body.id}`, { budget_usd_per_month: 10 });
    expect((await chat(key.body.key)).status).toBe(200);

    const rows = await proxy.waitForUsageRows(1);
    const mine = rows.filter((r) => r.key_id === key.body.id);
    expect(mine.filter((r) => r.error_code === "budget_exceeded").map((r) => r.status)).toEqual([429, 429]);
    expect(mine.filter((r) => r.status === 200).map((r) => Number(r.cost_usd))).toEqual([1.8, 1.8, 1.8]);
    expect(await counted(budgetRejections, { scope: "key" })).toBe(refusedBefore + 2);
  });

  it("a stream the client leaves before the provider's usage chunk is charged an estimate, not nothing", async () => {
    const key = await admin("POST", "/internal/keys", { name: "leaver", budget_usd_per_month: 1 });
    await leaveStreamAfter(
      `${proxy.url}/v1/chat/completions`,
      {
        headers: { authorization: `Bearer ${key.body.key}` },
        body: { model: "m-slow", stream: true, messages: [{ role: "user", content: "one two three four" }] },
      },
      "Echo",
    );
    const rows = await (async () => {
      for (let i = 0; i < 100; i++) {
        const mine = (await proxy.usageRows()).filter((r) => r.key_id === key.body.id);
        if (mine.length) return mine;
        await new Promise((r) => setTimeout(r, 50));
      }
      return [];
    })();
    expect(rows).toHaveLength(1);
    expect(rows[0].error_code).toBe("client_closed_request");
    expect(rows[0].completion_tokens).toBeGreaterThan(0);
    expect(rows[0].prompt_tokens).toBeGreaterThan(0);
    expect(Number(rows[0].cost_usd)).toBeGreaterThan(1);
    expect((await chat(key.body.key)).status).toBe(429);
  });

  it("a rotated key keeps the spend of the key it replaced", async () => {
    const old = await admin("POST", "/internal/keys", { name: "rotating", budget_usd_per_month: 3 });
    expect((await chat(old.body.key)).status).toBe(200);
    expect((await chat(old.body.key)).status).toBe(200); // 3.60 spent
    const rotated = await admin("POST", `/internal/keys/${old.body.id}/rotate`);
    expect(rotated.status).toBe(201);
    await proxy.usageWriter.flush();
    const refused = await chat(rotated.body.key);
    expect(refused.status).toBe(429);
    expect(refused.body.error.message).toContain("USD 3.60 this month");
    // The admin API shows the same spend: the new key carries the old one's, the old one its own.
    expect((await admin("GET", `/internal/keys/${rotated.body.id}`)).body.spent_usd_this_month).toBe(3.6);
    const list = (await admin("GET", "/internal/keys")).body.data as Array<{
      id: string;
      spent_usd_this_month: number;
    }>;
    expect(list.find((k) => k.id === old.body.id)?.spent_usd_this_month).toBe(3.6);
    expect(list.find((k) => k.id === rotated.body.id)?.spent_usd_this_month).toBe(3.6);
  });

  it("a team's budget is shared by its keys; 0 blocks at once", async () => {
    const team = await admin("POST", "/internal/teams", { name: "budget-team", budget_usd_per_month: 2 });
    const a = await admin("POST", "/internal/keys", { name: "a", team_id: team.body.id });
    const b = await admin("POST", "/internal/keys", { name: "b", team_id: team.body.id });
    expect((await chat(a.body.key)).status).toBe(200); // team: 0.00
    expect((await chat(b.body.key)).status).toBe(200); // team: 1.80
    // Shown with the rows written or not (this process's unwritten rows count).
    expect((await admin("GET", `/internal/teams/${team.body.id}`)).body.spent_usd_this_month).toBe(3.6);
    await proxy.usageWriter.flush();
    const teams = (await admin("GET", "/internal/teams")).body.data as Array<{
      id: string;
      spent_usd_this_month: number;
    }>;
    expect(teams.find((t) => t.id === team.body.id)?.spent_usd_this_month).toBe(3.6);
    expect((await admin("GET", `/internal/keys/${a.body.id}`)).body.spent_usd_this_month).toBe(1.8);
    for (const k of [a, b]) {
      const refused = await chat(k.body.key);
      expect(refused.status).toBe(429);
      expect(refused.body.error.param).toBe("team.budget_usd_per_month");
    }
    const blocked = await admin("POST", "/internal/keys", { name: "none", budget_usd_per_month: 0 });
    const res = await chat(blocked.body.key);
    expect(res.status).toBe(429);
    expect(res.body.error.message).toContain("monthly budget is 0");
  });
});
