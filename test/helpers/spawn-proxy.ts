/**
 * Run the real proxy process (service/main.ts: cluster primary + workers) for process-level tests: signals,
 * draining, crash replacement, cross-worker metrics, several replicas sharing PostgreSQL and Redis.
 * It runs the compiled service (dist/, built by `npm test` before vitest, or by test/global-setup.ts), exactly
 * what the container image runs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { migrate } from "../../service/adapters/migrations";
import { createPgKeyStore } from "../../service/adapters/pg-stores";
import { generateApiKey } from "../../service/lib/keys";
import { createLogger } from "../../service/logger";
import { freePort } from "./postgres";

/** Migrate a database and insert an all-scopes API key, for tests that run the proxy as a process. */
export async function prepareDatabase(pool: pg.Pool, name = "test"): Promise<string> {
  await migrate(pool, { log: createLogger("silent") });
  const generated = generateApiKey();
  await createPgKeyStore(pool).create({
    name,
    teamId: null,
    scopes: ["*"],
    expiresAt: null,
    limits: { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null },
    hash: generated.hash,
    prefix: generated.prefix,
  });
  return generated.key;
}

const ROOT = path.resolve(__dirname, "../..");

export interface SpawnedProxy {
  url: string;
  port: number;
  proc: ChildProcess;
  /** The config file it was started with (configYaml), if any. */
  configFile: string | null;
  /** Everything the process printed so far. */
  output(): string;
  /** Send a signal and resolve with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export async function spawnProxy(opts: {
  env: Record<string, string>;
  configYaml?: string;
  port?: number;
  readyTimeoutMs?: number;
}): Promise<SpawnedProxy> {
  const port = opts.port ?? (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-proc-"));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? dir,
    PORT: String(port),
    HOST: "127.0.0.1",
    DATA_DIR: path.join(dir, "data"),
    LOG_LEVEL: "info",
    ...opts.env,
  };
  if (opts.configYaml !== undefined) {
    env.CONFIG_FILE = path.join(dir, "config.yaml");
    fs.writeFileSync(env.CONFIG_FILE, opts.configYaml);
  }
  const main = path.join(ROOT, "dist/service/main.js");
  if (!fs.existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` first`);
  const proc = spawn(process.execPath, [main], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`proxy exited with ${proc.exitCode}:\n${out}`);
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`proxy not ready in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    port,
    proc,
    configFile: env.CONFIG_FILE ?? null,
    output: () => out,
    exited,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null) proc.kill(signal);
      const code = await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
