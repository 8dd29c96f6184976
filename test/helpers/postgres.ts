/**
 * PostgreSQL for tests: a fresh database on the shared server at 127.0.0.1:5432 (`createTestDatabase`), or a
 * throwaway PostgreSQL 15 server of its own (`startThrowawayPostgres`) for outage tests: stop it, kill it, start
 * it again on the same port. The throwaway server is copied from a template initdb'd once under /tmp.
 */
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

const ADMIN_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const PGBIN = process.env.PGBIN ?? "/usr/lib/postgresql/15/bin";
const TEMPLATE_DIR = path.join(os.tmpdir(), "llmp-pg15-template");

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** A new, empty database with a unique name on the shared server. */
export async function createTestDatabase(prefix = "llmp_test"): Promise<TestDatabase> {
  const name = `${prefix}_${Date.now().toString(36)}_${crypto.randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: ADMIN_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

const asRoot = typeof process.getuid === "function" && process.getuid() === 0;

/** Run a PostgreSQL binary as the `postgres` user (initdb refuses to run as root). */
function pgExec(binary: string, args: string[], timeoutMs = 60_000): string {
  const file = path.join(PGBIN, binary);
  const [cmd, argv] = asRoot ? ["runuser", ["-u", "postgres", "--", file, ...args]] : [file, args];
  return execFileSync(cmd, argv, { encoding: "utf8", timeout: timeoutMs, stdio: ["ignore", "pipe", "pipe"] });
}

function chownPostgres(target: string): void {
  if (asRoot) execFileSync("chown", ["-R", "postgres:postgres", target]);
}

/** initdb once per machine; concurrent test files race to rename their copy into place and the loser discards it. */
function ensureTemplate(): string {
  const data = path.join(TEMPLATE_DIR, "data");
  if (fs.existsSync(path.join(data, "PG_VERSION"))) return data;
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-pg15-staging-"));
  fs.chmodSync(staging, 0o755);
  chownPostgres(staging);
  pgExec("initdb", [
    "-D",
    path.join(staging, "data"),
    "-U",
    "postgres",
    "--auth=trust",
    "--no-sync",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
  ]);
  try {
    fs.renameSync(staging, TEMPLATE_DIR);
  } catch {
    fs.rmSync(staging, { recursive: true, force: true });
  }
  return data;
}

export interface ThrowawayPostgres {
  url: string;
  port: number;
  /** Fast shutdown (clients disconnected, data kept). */
  stop(): Promise<void>;
  /** Start again on the same port and data directory. */
  start(): Promise<void>;
  /** Immediate shutdown, as a crash: no checkpoint; recovery runs at the next start. */
  kill(): Promise<void>;
  /**
   * Freeze the postmaster (SIGSTOP): new connections hang instead of failing, as with a network partition; with
   * `all`, its backends too, so queries on open connections hang as well.
   */
  pause(opts?: { all?: boolean }): void;
  /** Undo pause() (SIGCONT). */
  resume(): void;
  /** Stop if running and delete the data directory. */
  destroy(): Promise<void>;
}

export interface ThrowawayPostgresOptions {
  /** Serve TLS with this certificate chain and key (PEM). */
  tls?: { cert: string; key: string };
}

/** The direct children of `pid` (a postmaster's backends and helpers). */
function children(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** A private PostgreSQL 15 on a random port, fsync off. Costs about half a second after the first initdb. */
export async function startThrowawayPostgres(
  opts: ThrowawayPostgresOptions = {},
): Promise<ThrowawayPostgres> {
  const template = ensureTemplate();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-pg15-"));
  fs.chmodSync(dir, 0o755);
  execFileSync("cp", ["-a", template, path.join(dir, "data")]);
  const data = path.join(dir, "data");
  if (opts.tls) {
    fs.writeFileSync(path.join(data, "server.crt"), opts.tls.cert);
    fs.writeFileSync(path.join(data, "server.key"), opts.tls.key, { mode: 0o600 });
  }
  chownPostgres(dir);
  const tlsFlags = opts.tls ? " -c ssl=on" : "";
  const port = await freePort();
  let running = false;
  const start = async () => {
    pgExec("pg_ctl", [
      "-D",
      data,
      "-l",
      path.join(dir, "pg.log"),
      "-w",
      "-t",
      "30",
      "-o",
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off${tlsFlags}`,
      "start",
    ]);
    running = true;
  };
  const shutdown = async (mode: "fast" | "immediate") => {
    if (!running) return;
    pgExec("pg_ctl", ["-D", data, "-m", mode, "-w", "-t", "30", "stop"]);
    running = false;
  };
  const postmasterPid = () =>
    Number(fs.readFileSync(path.join(data, "postmaster.pid"), "utf8").split("\n")[0]);
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    start,
    stop: () => shutdown("fast"),
    kill: () => shutdown("immediate"),
    pause: (how = {}) => {
      const pids = [postmasterPid(), ...(how.all ? children(postmasterPid()) : [])];
      for (const pid of pids) process.kill(pid, "SIGSTOP");
    },
    resume: () => {
      for (const pid of [postmasterPid(), ...children(postmasterPid())]) process.kill(pid, "SIGCONT");
    },
    async destroy() {
      if (running) {
        try {
          process.kill(postmasterPid(), "SIGCONT");
        } catch {
          // Already gone.
        }
      }
      await shutdown("immediate").catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
