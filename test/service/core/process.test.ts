import fs from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";
import { upstreamConfig, TEST_MASTER_KEY } from "../../helpers/proxy";
import { prepareDatabase, spawnProxy } from "../../helpers/spawn-proxy";

const WORDS = Array.from({ length: 20 }, (_, i) => `w${i}`).join(" ");

async function streamChat(url: string, key: string, onFirstChunk: () => void): Promise<string> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "slow", stream: true, messages: [{ role: "user", content: WORDS }] }),
  });
  expect(res.status).toBe(200);
  const decoder = new TextDecoder();
  let text = "";
  let first = true;
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    text += decoder.decode(part, { stream: true });
    if (first) {
      first = false;
      onFirstChunk();
    }
  }
  return text;
}

/** `n` streams, once each has received its first chunk: their bodies, still coming. */
async function streamsUnderWay(url: string, key: string, n: number): Promise<Array<Promise<string>>> {
  let started = 0;
  let allStarted!: () => void;
  const startedAll = new Promise<void>((r) => (allStarted = r));
  const streams = Array.from({ length: n }, () =>
    streamChat(url, key, () => {
      if (++started === n) allStarted();
    }),
  );
  await startedAll;
  return streams;
}

/** Create a key through the admin API of the proxy at `url`. */
async function createKeyOn(url: string, name: string): Promise<{ id: string; key: string }> {
  const res = await fetch(`${url}/internal/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_MASTER_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  return (await res.json()) as { id: string; key: string };
}

async function revokeOn(url: string, id: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await fetch(`${url}/internal/keys/${id}/revoke`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_MASTER_KEY}`, ...headers },
  });
  await res.text();
  return res.status;
}

/** The status of one small chat request with `key` (model "slow"). */
async function chatStatus(url: string, key: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: "slow", messages: [{ role: "user", content: "hi" }] }),
  });
  await res.text();
  return res.status;
}

describe("the proxy process: workers, SIGTERM drain, crash replacement, pod-wide metrics", () => {
  let upstream: FakeUpstream;
  let db: TestDatabase;
  let pool: pg.Pool;
  let key: string;
  let config: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream({ chunkDelayMs: 60 });
    db = await createTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    key = await prepareDatabase(pool, "proc");
    config = upstreamConfig({ fake: upstream.baseUrl }, [{ name: "slow", provider: "fake" }]).replace(
      "timeout_ms: 2000",
      "timeout_ms: 10000",
    );
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
    await upstream?.close();
  });

  it("finishes 20 in-flight streams on SIGTERM, records them all, and exits 0", async () => {
    const proxy = await spawnProxy({
      env: { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "2" },
      configYaml: config,
    });
    const before = Number((await pool.query("SELECT count(*) FROM usage")).rows[0].count);
    const streams = await streamsUnderWay(proxy.url, key, 20);
    const code = proxy.stop("SIGTERM");
    // New connections are refused once the drain has begun (polled: the signal travels primary → worker).
    let refused = false;
    for (let i = 0; i < 50 && !refused; i++) {
      try {
        await fetch(`${proxy.url}/healthz`, { headers: { connection: "close" } });
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        refused = true;
      }
    }
    expect(refused).toBe(true);
    const bodies = await Promise.all(streams);
    for (const body of bodies) {
      expect(body.trim().endsWith("data: [DONE]")).toBe(true);
      expect(body).toContain("w19");
    }
    expect(await code).toBe(0);
    const after = Number((await pool.query("SELECT count(*) FROM usage")).rows[0].count);
    expect(after - before).toBe(20);
  }, 150_000);

  it("a request still open when the grace period runs out is recorded as cut by the shutdown, not by its client", async () => {
    const proxy = await spawnProxy({
      env: {
        DATABASE_URL: db.url,
        PROXY_MASTER_KEY: TEST_MASTER_KEY,
        WORKERS: "1",
        SHUTDOWN_GRACE_SECONDS: "1",
      },
      configYaml: config,
    });
    upstream.behave({ kind: "hang" });
    try {
      const { rows: before } = await pool.query("SELECT max(created_at) AS at FROM usage");
      const pending = chatStatus(proxy.url, key).catch(() => 0);
      await new Promise((r) => setTimeout(r, 500));
      expect(await proxy.stop("SIGTERM")).toBe(0);
      await pending;
      const { rows } = await pool.query(
        "SELECT status, error_code FROM usage WHERE created_at > coalesce($1, '-infinity'::timestamptz)",
        [before[0].at],
      );
      expect(rows).toEqual([{ status: 503, error_code: "shutdown_timeout" }]);
    } finally {
      upstream.behave({ kind: "ok" });
    }
  }, 60_000);

  it("a key revoked through one worker stops working at once on every worker of the pod", async () => {
    const proxy = await spawnProxy({
      // The test reads which worker answered from the access lines as they are written: no block buffering.
      env: {
        DATABASE_URL: db.url,
        PROXY_MASTER_KEY: TEST_MASTER_KEY,
        WORKERS: "2",
        LOG_LEVEL: "info",
        LOG_FLUSH_MS: "0",
      },
      configYaml: config,
    });
    try {
      const { id, key: podKey } = await createKeyOn(proxy.url, "pod-wide");
      // New connections are dealt to the workers in turn: once both are listening, a few requests leave the key
      // cached in both (the access lines say which worker answered).
      const chat = () => chatStatus(proxy.url, podKey, { connection: "close" });
      const count = (re: RegExp) => new Set([...proxy.output().matchAll(re)].map((m) => m[1])).size;
      const deadline = Date.now() + 90_000;
      while (count(/"pid":(\d+),"role":"worker".*"worker listening"/g) < 2 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      const servedBy = () => count(/"pid":(\d+),"role":"worker".*"route":"chat","status":200/g);
      for (let i = 0; i < 20 && servedBy() < 2; i++) expect(await chat()).toBe(200);
      expect(servedBy()).toBe(2);

      expect(await revokeOn(proxy.url, id, { connection: "close" })).toBe(200);
      // Well inside the 5 s key cache: without the pod-wide relay the other worker would still accept the key.
      await new Promise((r) => setTimeout(r, 200));
      for (let i = 0; i < 6; i++) expect(await chat()).toBe(401);
    } finally {
      expect(await proxy.stop("SIGTERM")).toBe(0);
    }
  }, 150_000);

  it("with Redis, a key revoked on one replica stops working at once on another (pub/sub)", async () => {
    const env = {
      DATABASE_URL: db.url,
      PROXY_MASTER_KEY: TEST_MASTER_KEY,
      WORKERS: "1",
      REDIS_URL: "redis://127.0.0.1:6379",
    };
    const [a, b] = await Promise.all([
      spawnProxy({ env, configYaml: config }),
      spawnProxy({ env, configYaml: config }),
    ]);
    try {
      const { id, key: replicaKey } = await createKeyOn(a.url, "cross-replica");
      const chatOn = (url: string) => chatStatus(url, replicaKey);
      expect(await chatOn(b.url)).toBe(200); // b has the key cached now
      expect(await revokeOn(a.url, id)).toBe(200);
      // Well inside b's 5 s key cache: only the event over Redis can make b refuse the key already.
      await new Promise((r) => setTimeout(r, 300));
      expect(await chatOn(b.url)).toBe(401);
    } finally {
      expect(await a.stop("SIGTERM")).toBe(0);
      expect(await b.stop("SIGTERM")).toBe(0);
    }
  }, 150_000);

  it("a stop right after the first worker is ready also stops the workers still starting, at once", async () => {
    // Ready = one worker listening; the others are still starting (on 2 cores, about a second apart).
    const proxy = await spawnProxy({
      env: { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "3" },
      configYaml: config,
    });
    const started = Date.now();
    expect(await proxy.stop("SIGTERM")).toBe(0);
    expect(proxy.output()).not.toContain("workers did not stop in time");
    expect(Date.now() - started).toBeLessThan(15_000);
  }, 150_000);

  it("drains on SIGHUP (no reload) like SIGTERM: streams finish, rows recorded, exit 0", async () => {
    const proxy = await spawnProxy({
      env: { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "2" },
      configYaml: config,
    });
    const before = Number((await pool.query("SELECT count(*) FROM usage")).rows[0].count);
    const streams = await streamsUnderWay(proxy.url, key, 6);
    // Every process of the pod, as a closed terminal signals its process group.
    const listening = () => [...proxy.output().matchAll(/"pid":(\d+),"role":"worker".*"worker listening"/g)];
    for (let i = 0; i < 300 && listening().length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const workers = listening();
    expect(workers.length).toBe(2);
    for (const pid of [proxy.proc.pid!, ...workers.map((m) => Number(m[1]))]) process.kill(pid, "SIGHUP");
    const bodies = await Promise.all(streams);
    for (const body of bodies) expect(body.trim().endsWith("data: [DONE]")).toBe(true);
    expect(await proxy.exited).toBe(0);
    expect(proxy.output()).toContain("does not reload its configuration");
    const after = Number((await pool.query("SELECT count(*) FROM usage")).rows[0].count);
    expect(after - before).toBe(6);
    await proxy.stop();
  }, 150_000);

  it("a stalled worker is left out of /metrics (counted as missing) instead of failing the scrape", async () => {
    const proxy = await spawnProxy({
      env: { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "2" },
      configYaml: config,
    });
    const listening = () => [...proxy.output().matchAll(/"pid":(\d+),"role":"worker".*"worker listening"/g)];
    for (let i = 0; i < 300 && listening().length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const [stalled] = listening().map((m) => Number(m[1]));
    /** /metrics from whichever worker answers (a connection handed to the stopped one times out). */
    const scrape = async (): Promise<string> => {
      for (let i = 0; i < 10; i++) {
        try {
          const res = await fetch(`${proxy.url}/metrics`, {
            headers: { connection: "close" },
            signal: AbortSignal.timeout(8_000),
          });
          if (res.status === 200) return await res.text();
        } catch {
          // handed to the stopped worker
        }
      }
      throw new Error("no /metrics answer");
    };
    try {
      expect(await scrape()).toContain("llmproxy_metrics_workers_missing 0");
      process.kill(stalled, "SIGSTOP");
      const partial = await scrape();
      expect(partial).toContain("llmproxy_metrics_workers_missing 1");
      expect(partial).toContain("llmproxy_requests_total");
    } finally {
      process.kill(stalled, "SIGCONT");
      expect(await proxy.stop("SIGTERM")).toBe(0);
    }
  }, 150_000);

  it("replaces a crashed worker with the config the pod started with, and shows one metrics view across workers", async () => {
    const proxy = await spawnProxy({
      env: { DATABASE_URL: db.url, PROXY_MASTER_KEY: TEST_MASTER_KEY, WORKERS: "2", LOG_LEVEL: "info" },
      configYaml: config,
    });
    try {
      const listening = () => [
        ...proxy.output().matchAll(/"pid":(\d+),"role":"worker".*"worker listening"/g),
      ];
      const waitFor = async (cond: () => boolean, what: string) => {
        const deadline = Date.now() + 90_000;
        while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        expect(cond(), what).toBe(true);
      };
      await waitFor(() => listening().length >= 2, "both workers listening");
      // The file changes after the start (a ConfigMap update), broken: the replacement must not read it.
      fs.writeFileSync(proxy.configFile!, "models: [ {name: broken\n");
      process.kill(Number(listening()[0][1]), "SIGKILL");
      await waitFor(() => proxy.output().includes("starting a replacement"), "replacement started");
      await waitFor(() => listening().length >= 3, "replacement listening");

      const n = 12;
      for (let i = 0; i < n; i++) {
        const res = await fetch(`${proxy.url}/v1/chat/completions`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${key}`,
            "content-type": "application/json",
            connection: "close",
          },
          body: JSON.stringify({ model: "slow", messages: [{ role: "user", content: "hi" }] }),
        });
        expect(res.status).toBe(200);
      }
      // Every worker answers /metrics with the sum over all workers.
      for (let i = 0; i < 4; i++) {
        const text = await (await fetch(`${proxy.url}/metrics`, { headers: { connection: "close" } })).text();
        const line = text
          .split("\n")
          .find((l) => l.startsWith('llmproxy_requests_total{route="chat",status="200"'));
        expect(line, text.slice(0, 500)).toBeDefined();
        expect(Number(line!.split(" ").at(-1))).toBe(n);
      }
    } finally {
      expect(await proxy.stop("SIGTERM")).toBe(0);
    }
  }, 150_000);
});
