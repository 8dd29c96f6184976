/**
 * Start-up failures a user can fix end in one line naming the setting and the fix, and the process stops (exit 1)
 * instead of starting replacement workers that fail alike: a port in use, a HOST the machine does not have, a
 * database that does not exist. A PostgreSQL that is not reachable yet is waited for (DATABASE_WAIT_SECONDS), so a
 * pod that starts before its database comes up on its own. PORT=0 announces the port the system chose.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, freePort, type TestDatabase } from "../../helpers/postgres";
import { startProxy, TEST_MASTER_KEY } from "../../helpers/proxy";
import { spawnProxy } from "../../helpers/spawn-proxy";

const MAIN = path.resolve(__dirname, "../../../dist/service/main.js");
const SECRET = "pw-that-must-not-appear";

/** Runs the proxy until it exits (or `timeoutMs`), with everything it printed. */
function runToExit(
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<{ code: number | null; output: string; ms: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-start-"));
  const started = Date.now();
  const proc = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH ?? "",
      HOST: "127.0.0.1",
      WORKERS: "2",
      DATA_DIR: dir,
      PROXY_MASTER_KEY: TEST_MASTER_KEY,
      LOG_LEVEL: "info",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  proc.stdout.on("data", (d: Buffer) => (output += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (output += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      fs.rmSync(dir, { recursive: true, force: true });
      resolve({ code, output, ms: Date.now() - started });
    });
  });
}

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase("llmp_start");
});
afterAll(async () => {
  await db?.drop();
});

describe("start-up failures", () => {
  it("a port in use: one clear line naming PORT, exit 1, no replacement workers", async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      // Four workers failing at once: the primary must stop cleanly while several of them are already gone.
      const run = await runToExit({ PORT: String(port), DATABASE_URL: db.url, WORKERS: "4" });
      expect(run.code).toBe(1);
      expect(run.output).toContain(`env PORT: 127.0.0.1:${port} is already in use (EADDRINUSE)`);
      expect(run.output).not.toContain("starting a replacement");
      expect(run.output).not.toMatch(/\n\s+at /); // no stack trace
    } finally {
      blocker.close();
    }
  });

  it("a DATA_DIR where the usage spool cannot be written: one line naming DATA_DIR, before anything serves", async () => {
    // A regular file where the directory should be (permissions would not stop root, which CI may run as).
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "llmp-datafile-")), "data");
    fs.writeFileSync(file, "not a directory");
    const run = await runToExit({ PORT: String(await freePort()), DATABASE_URL: db.url, DATA_DIR: file });
    expect(run.code).toBe(1);
    expect(run.output).toContain(`env DATA_DIR: ${path.join(file, "usage-spool")} cannot be written`);
    expect(run.output).toContain("point DATA_DIR at a writable directory");
    expect(run.output).not.toMatch(/\n\s+at /);
  });

  it("a HOST that is not an address of this machine names HOST", async () => {
    // 192.0.2.0/24 is TEST-NET-1: documentation only, never configured on a host.
    const run = await runToExit({ HOST: "192.0.2.7", PORT: String(await freePort()), DATABASE_URL: db.url });
    expect(run.code).toBe(1);
    expect(run.output).toContain("env HOST: 192.0.2.7 is not an address of this machine");
    expect(run.output).not.toContain("starting a replacement");
  });

  it("a database that does not exist: named in one line, without the password, at once", async () => {
    const url = new URL(db.url);
    url.password = SECRET;
    url.pathname = "/llmp_no_such_database";
    const run = await runToExit({ PORT: String(await freePort()), DATABASE_URL: url.toString() });
    expect(run.code).toBe(1);
    expect(run.output).toContain('env DATABASE_URL: database "llmp_no_such_database" does not exist');
    expect(run.output).not.toContain(SECRET);
    expect(run.output).not.toMatch(/\n\s+at /);
    expect(run.output).not.toContain("waiting for it"); // not a failure that passes
  });

  it("an unreachable database is waited for DATABASE_WAIT_SECONDS, then named", async () => {
    const port = await freePort(); // nothing listens there
    const run = await runToExit({
      PORT: String(await freePort()),
      DATABASE_URL: `postgres://postgres:${SECRET}@127.0.0.1:${port}/test`,
      DATABASE_WAIT_SECONDS: "2",
    });
    expect(run.code).toBe(1);
    expect(run.output).toContain("PostgreSQL not reachable yet; waiting for it");
    expect(run.output).toContain(
      `env DATABASE_URL: PostgreSQL at 127.0.0.1:${port}/test is not reachable (ECONNREFUSED) after waiting 2 s`,
    );
    expect(run.output).not.toContain(SECRET);
    expect(run.ms).toBeGreaterThanOrEqual(2000);
  });

  it("a database that comes up after the proxy starts: the proxy waits and serves", async () => {
    // The database's port refuses connections for ~1.5 s, then forwards to the real PostgreSQL.
    const port = await freePort();
    const target = new URL(db.url);
    const forwarder = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 5432), target.hostname);
      client.pipe(upstream).pipe(client);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    });
    const late = setTimeout(() => forwarder.listen(port, "127.0.0.1"), 1500);
    const url = new URL(db.url);
    url.port = String(port);
    try {
      const proxy = await spawnProxy({
        env: { DATABASE_URL: url.toString(), PROXY_MASTER_KEY: TEST_MASTER_KEY },
      });
      try {
        expect(proxy.output()).toContain("PostgreSQL not reachable yet; waiting for it");
        expect((await fetch(`${proxy.url}/readyz`)).status).toBe(200);
      } finally {
        expect(await proxy.stop()).toBe(0);
      }
    } finally {
      clearTimeout(late);
      forwarder.close();
    }
  });

  it("PORT=0 announces the port the system chose, and serves on it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-port0-"));
    const proc = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH ?? "",
        HOST: "127.0.0.1",
        PORT: "0",
        WORKERS: "2",
        DATA_DIR: dir,
        DATABASE_URL: db.url,
        PROXY_MASTER_KEY: TEST_MASTER_KEY,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      const announced = await new Promise<string>((resolve, reject) => {
        let out = "";
        const timer = setTimeout(() => reject(new Error(`not ready:\n${out}`)), 30_000);
        proc.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*"llm-proxy ready"/.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]);
          }
        });
      });
      expect(announced).not.toMatch(/:0$/);
      expect((await fetch(`${announced}/healthz`)).status).toBe(200);
    } finally {
      proc.kill("SIGTERM");
      await new Promise((r) => proc.once("exit", r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("Redis at start", () => {
  it("refused credentials stop the start in one line naming REDIS_URL, without the password", async () => {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-redis-auth-"));
    const redis = spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--requirepass",
        "the-right-one",
        "--save",
        "",
        "--dir",
        dir,
      ],
      { stdio: "ignore" },
    );
    try {
      // Up once it takes connections.
      for (let i = 0; i < 200; i++) {
        const up = await new Promise<boolean>((resolve) => {
          const s = net.connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
          s.once("error", () => resolve(false));
        });
        if (up) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      const run = await runToExit({
        PORT: String(await freePort()),
        DATABASE_URL: db.url,
        REDIS_URL: `redis://:${SECRET}@127.0.0.1:${port}`,
      });
      expect(run.code).toBe(1);
      expect(run.output).toContain(
        `env REDIS_URL: Redis at redis://127.0.0.1:${port} refused the credentials (WRONGPASS`,
      );
      expect(run.output).not.toContain(SECRET);
      expect(run.output).not.toContain("starting a replacement");
      expect(run.output).not.toContain("llm-proxy ready");
    } finally {
      redis.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("an unreachable Redis is a warning naming REDIS_URL; /readyz reports it, and is 503 only when fail-closed", async () => {
    const port = await freePort();
    const proxy = await spawnProxy({
      env: {
        DATABASE_URL: db.url,
        PROXY_MASTER_KEY: TEST_MASTER_KEY,
        WORKERS: "1",
        REDIS_URL: `redis://127.0.0.1:${port}`,
      },
    });
    try {
      expect(proxy.output()).toMatch(
        /Redis not reachable at start: budgets are enforced per process \(fail-open\).*check REDIS_URL/,
      );
      const res = await fetch(`${proxy.url}/readyz`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as any).checks).toEqual({ database: "ok", redis: "unavailable" });
    } finally {
      await proxy.stop();
    }
    const closed = await startProxy({
      env: { REDIS_URL: `redis://127.0.0.1:${port}`, RATE_LIMIT_FAILURE_MODE: "fail-closed" },
    });
    try {
      const res = await fetch(`${closed.url}/readyz`);
      expect(res.status).toBe(503);
      expect(((await res.json()) as any).checks).toEqual({ database: "ok", redis: "unavailable" });
      expect((await fetch(`${closed.url}/readyz?dependencies=0`)).status).toBe(200);
    } finally {
      await closed.close();
    }
  });
});
