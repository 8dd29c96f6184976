/**
 * Throwaway redis-server processes for fault tests (see ../shared/reference/runtime.md §4): random port on
 * 127.0.0.1, no persistence, a temp dir. `kill()` SIGKILLs it, `restart()` starts a fresh one on the same port.
 * The shared Redis at 127.0.0.1:6379 is for tests that need no faults (use unique key ids there).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const SHARED_REDIS_URL = "redis://127.0.0.1:6379";

export interface ThrowawayRedis {
  port: number;
  url: string;
  /** SIGKILL the server (no goodbye to clients). */
  kill(): Promise<void>;
  /** SIGSTOP: the server keeps its connections but answers nothing (a hung Redis). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Start a new server on the same port (data is gone, as after a real crash without persistence). */
  restart(): Promise<void>;
  /** Stop for good and remove the temp dir. */
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/**
 * Spawn `redis-server` on `port` (no persistence, data under `dir`, plus `extraArgs`); `onSpawn` sees the process
 * at once (so a failure while waiting still leaves it to be killed); resolves once it answers PING.
 */
async function spawnRedisServer(
  port: number,
  dir: string,
  extraArgs: string[],
  what: string,
  onSpawn: (proc: ChildProcess) => void,
): Promise<ChildProcess> {
  const proc = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      ...extraArgs,
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    { stdio: "ignore" },
  );
  onSpawn(proc);
  let failed: Error | null = null;
  proc.once("error", (e) => (failed = e));
  await waitUntil(
    async () => {
      if (failed) throw failed;
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`);
      return ping(port);
    },
    10_000,
    what,
  );
  return proc;
}

export async function startRedis(): Promise<ThrowawayRedis> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmproxy-redis-"));
  let child: ChildProcess | null = null;

  const launch = async () => {
    await spawnRedisServer(port, dir, [], `redis-server on port ${port}`, (proc) => (child = proc));
  };

  const kill = async () => {
    const c = child as ChildProcess | null;
    if (!c) return;
    child = null;
    c.kill("SIGCONT");
    c.kill("SIGKILL");
    await exited(c);
  };

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    pause: () => void (child as ChildProcess | null)?.kill("SIGSTOP"),
    resume: () => void (child as ChildProcess | null)?.kill("SIGCONT"),
    restart: async () => {
      await kill();
      await launch();
    },
    stop: async () => {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ThrowawayRedisCluster {
  /** The masters' ports, in the order given to `redis-cli --cluster create`. */
  ports: number[];
  /** `redis://127.0.0.1:<port>` of each master; any one of them is a seed node. */
  urls: string[];
  /** Stop every node for good and remove the temp dir. */
  stop(): Promise<void>;
}

function runRedisCli(args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn("redis-cli", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    proc.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`redis-cli ${args.join(" ")} exited with ${code}:\n${out}`));
    });
  });
}

/**
 * A throwaway Redis Cluster: `masters` redis-server processes with `--cluster-enabled yes` on free ports (no
 * replicas, no persistence, one temp dir), joined by `redis-cli --cluster create`, returned once every node reports
 * `cluster_state:ok`. If anything fails on the way, the nodes already started are stopped before the error is thrown.
 */
export async function startRedisCluster(masters = 3): Promise<ThrowawayRedisCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmproxy-redis-cluster-"));
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  const stop = async () => {
    const all = children.splice(0);
    for (const c of all) {
      c.kill("SIGCONT");
      c.kill("SIGKILL");
    }
    await Promise.all(all.map(exited));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters; i++) {
      // Cluster nodes also listen on port + 10000 (the cluster bus): keep both below 65536 and unused.
      let port = await freePort();
      while (port > 55_000 || ports.includes(port)) port = await freePort();
      ports.push(port);
      const clusterArgs = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        path.join(dir, `nodes-${port}.conf`),
        "--cluster-node-timeout",
        "2000",
      ];
      await spawnRedisServer(port, dir, clusterArgs, `cluster node redis-server on port ${port}`, (proc) =>
        children.push(proc),
      );
    }
    await runRedisCli([
      "--cluster",
      "create",
      ...ports.map((p) => `127.0.0.1:${p}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ]);
    await waitUntil(
      async () => {
        const infos = await Promise.all(
          ports.map((p) => runRedisCli(["-p", String(p), "cluster", "info"]).catch(() => "")),
        );
        return infos.every((info) => info.includes("cluster_state:ok"));
      },
      30_000,
      "cluster_state:ok on every node",
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { ports, urls: ports.map((p) => `redis://127.0.0.1:${p}`), stop };
}
