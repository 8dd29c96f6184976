import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../../helpers/postgres";
import { TEST_MASTER_KEY } from "../../helpers/proxy";
import { prepareDatabase, spawnProxy } from "../../helpers/spawn-proxy";
import { usageRow } from "../../helpers/usage";
import { createPostgres } from "../../../service/adapters/postgres";
import { createUsageWriter } from "../../../service/adapters/usage-writer";
import { createLogger } from "../../../service/logger";
import { spawn } from "node:child_process";
import { freePort } from "../../helpers/postgres";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

async function count(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return Number((await client.query("SELECT count(*) FROM usage")).rows[0].count);
  } finally {
    await client.end();
  }
}

async function waitForCount(url: string, n: number, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await count(url).catch(() => -1);
    if (c >= n || Date.now() > deadline) return c;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("usage rows survive a PostgreSQL outage, and a SIGTERM during it", () => {
  let db: ThrowawayPostgres;
  let key: string;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-outage-"));

  beforeAll(async () => {
    db = await startThrowawayPostgres();
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    key = await prepareDatabase(pool, "outage");
    await pool.end();
  });
  afterAll(async () => {
    await db?.destroy();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const chat = (url: string) =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", connection: "close" },
      body: JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "still there?" }] }),
    });

  it("keeps serving known keys, writes every row when PostgreSQL is back, and spools across a restart", async () => {
    const env = { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "1", DATA_DIR: dataDir };
    let proxy = await spawnProxy({ env });
    for (let i = 0; i < 3; i++) expect((await chat(proxy.url)).status).toBe(200);
    expect(await waitForCount(db.url, 3)).toBe(3);

    // Outage 1: requests are still served (the key was verified before), rows wait in memory.
    await db.stop();
    for (let i = 0; i < 4; i++) expect((await chat(proxy.url)).status).toBe(200);
    expect((await fetch(`${proxy.url}/readyz`)).status).toBe(503);
    // The pod itself is fine: the Kubernetes probe (database left out) keeps it in the Service.
    expect((await fetch(`${proxy.url}/readyz?dependencies=0`)).status).toBe(200);
    // The admin API cannot answer without the database: a 503 to retry, not a bare 500.
    for (const [method, route] of [
      ["GET", "/internal/teams"],
      ["POST", "/internal/keys"],
      ["GET", "/internal/usage"],
    ]) {
      const res = await fetch(`${proxy.url}${route}`, {
        method,
        headers: { authorization: `Bearer ${TEST_MASTER_KEY}`, "content-type": "application/json" },
        ...(method === "POST" ? { body: JSON.stringify({ name: "during-outage" }) } : {}),
      });
      expect(res.status, `${method} ${route}`).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("database_unavailable");
    }
    await db.start();
    expect(await waitForCount(db.url, 7)).toBe(7);

    // Outage 2: SIGTERM while PostgreSQL is down: the rows go to the spool, the process exits 0,
    // and the next start replays them.
    await db.stop();
    for (let i = 0; i < 3; i++) expect((await chat(proxy.url)).status).toBe(200);
    expect(await proxy.stop("SIGTERM")).toBe(0);
    const spool = path.join(dataDir, "usage-spool");
    expect(fs.readdirSync(spool).filter((f) => f.endsWith(".jsonl")).length).toBeGreaterThan(0);
    await db.start();
    proxy = await spawnProxy({ env });
    expect(await waitForCount(db.url, 10)).toBe(10);
    expect(await proxy.stop("SIGTERM")).toBe(0);
    expect(await count(db.url)).toBe(10);
  }, 180_000);

  it("a PostgreSQL that hangs (frozen, not refusing) does not hold the requests of keys verified before it", async () => {
    const hangDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-hang-"));
    const env = { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "1", DATA_DIR: hangDir };
    const proxy = await spawnProxy({ env });
    try {
      const before = await count(db.url);
      expect((await chat(proxy.url)).status).toBe(200);
      // Past the key cache's 5 s: the next request must re-check the key against the database.
      await new Promise((r) => setTimeout(r, 5_500));
      db.pause({ all: true });
      const took: number[] = [];
      try {
        for (let i = 0; i < 6; i++) {
          const t0 = Date.now();
          expect((await chat(proxy.url)).status).toBe(200);
          took.push(Date.now() - t0);
        }
      } finally {
        db.resume();
      }
      // Not the 5 s connect timeout or the 35 s query timeout each: about a second for the first, then at once.
      expect(Math.max(...took), String(took)).toBeLessThan(3_000);
      expect(
        took.slice(1).every((ms) => ms < 1_000),
        String(took),
      ).toBe(true);
      expect(await waitForCount(db.url, before + 7, 60_000)).toBe(before + 7);
    } finally {
      await proxy.stop("SIGTERM");
      fs.rmSync(hangDir, { recursive: true, force: true });
    }
  }, 120_000);

  it("a SIGTERM during the start-up spool replay gives the file back: the next start replays it, once", async () => {
    const replayDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-replay-"));
    const spoolDir = path.join(replayDir, "usage-spool");
    const before = await count(db.url);
    // A large spool: what a replica left while PostgreSQL was down.
    await db.stop();
    const log = createLogger("silent");
    const { pool } = createPostgres({ url: db.url, log, max: 1, connectionTimeoutMs: 200 });
    const writer = createUsageWriter({ pool, log, spoolDir, flushIntervalMs: 60_000, closeTimeoutMs: 200 });
    const N = 60_000;
    for (let i = 0; i < N; i++) writer.record(usageRow());
    await writer.close();
    await pool.end().catch(() => undefined);
    await db.start();
    const spooled = fs.readdirSync(spoolDir).sort();
    expect(spooled.length).toBeGreaterThan(0);

    const env = {
      DATABASE_URL: db.url,
      PROXY_MASTER_KEY: TEST_MASTER_KEY,
      WORKERS: "1",
      DATA_DIR: replayDir,
    };
    const proc = spawn(process.execPath, [path.resolve(__dirname, "../../../dist/service/main.js")], {
      env: { PATH: process.env.PATH ?? "", HOST: "127.0.0.1", PORT: String(await freePort()), ...env },
      stdio: "ignore",
    });
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    // Stopped while a file is claimed (a rollout replacing a pod that is still starting).
    const deadline = Date.now() + 30_000;
    while (!fs.readdirSync(spoolDir).some((f) => f.includes(".claimed-")) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    proc.kill("SIGTERM");
    expect(await exited).toBe(0);
    const left = fs.readdirSync(spoolDir).sort();
    expect(left.some((f) => f.includes(".claimed-"))).toBe(false);
    expect(left.length).toBeGreaterThan(0); // the interrupted file is back under its own name

    // The next start replays it at once (not after a stale-claim wait), every row once.
    const proxy = await spawnProxy({ env });
    try {
      expect(await waitForCount(db.url, before + N, 60_000)).toBe(before + N);
      expect(fs.readdirSync(spoolDir)).toEqual([]);
    } finally {
      await proxy.stop("SIGTERM");
      fs.rmSync(replayDir, { recursive: true, force: true });
    }
  }, 180_000);

  it("a replacement worker replays what is in the spool (rows a worker that died had spooled) without a restart", async () => {
    const liveDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-respawn-"));
    const env = { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "1", DATA_DIR: liveDir };
    const proxy = await spawnProxy({ env });
    try {
      const before = await count(db.url);
      // What a dying worker leaves: a spool file (written here by a writer whose database cannot be reached).
      const log = createLogger("silent");
      const { pool } = createPostgres({
        url: `postgres://postgres@127.0.0.1:${await freePort()}/x`,
        log,
        max: 1,
      });
      const writer = createUsageWriter({
        pool,
        log,
        spoolDir: path.join(liveDir, "usage-spool"),
        flushIntervalMs: 60_000,
        closeTimeoutMs: 200,
      });
      for (let i = 0; i < 25; i++) writer.record(usageRow());
      await writer.close();
      await pool.end().catch(() => undefined);
      // The worker dies; the primary starts a replacement, which replays the spool.
      const worker = Number(
        fs
          .readFileSync(`/proc/${proxy.proc.pid}/task/${proxy.proc.pid}/children`, "utf8")
          .trim()
          .split(/\s+/)[0],
      );
      process.kill(worker, "SIGKILL");
      expect(await waitForCount(db.url, before + 25, 60_000)).toBe(before + 25);
      expect(fs.readdirSync(path.join(liveDir, "usage-spool"))).toEqual([]);
    } finally {
      await proxy.stop("SIGTERM");
      fs.rmSync(liveDir, { recursive: true, force: true });
    }
  }, 120_000);
});
