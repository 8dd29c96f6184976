/**
 * Starts a Chroma server from the `chromadb` npm package as a child process: the embedded default (`npm start`
 * with nothing configured, data under ./data/chroma) and the tests use it. In production Chroma is its own
 * Deployment reached through CHROMA_URL.
 *
 * The server is Rust behind N-API inside one node process (one PID). On Debian 12 it needs the bindings pin in
 * package.json `overrides` (newer bindings require glibc 2.38).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

export interface ChromaServerOptions {
  /** Directory for Chroma's data (created if missing). */
  dataDir: string;
  /** TCP port; default: a free port chosen by the OS. */
  port?: number;
  /** Listen address. Default 127.0.0.1 (the embedded server is never exposed). */
  host?: string;
  /** Give up waiting for the heartbeat after this long. Default 30 000 ms. */
  startTimeoutMs?: number;
}

export interface ChromaServer {
  /** http://host:port, the value for CHROMA_URL. */
  readonly url: string;
  readonly port: number;
  readonly pid: number | undefined;
  /** SIGTERM, then SIGKILL after 5 s; resolves when the process has exited. */
  stop(): Promise<void>;
}

/**
 * The package's `exports` map hides `dist/cli.mjs`, so resolve the package's main entry and walk to the CLI by
 * path (main is dist/cjs/chromadb.cjs).
 */
export function chromaCliPath(): string {
  return path.join(path.dirname(require.resolve("chromadb")), "..", "cli.mjs");
}

/** A port that was free a moment ago (the OS picks it). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export async function startChromaServer(opts: ChromaServerOptions): Promise<ChromaServer> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? (await freePort(host));
  fs.mkdirSync(opts.dataDir, { recursive: true });
  const child = spawn(
    process.execPath,
    [chromaCliPath(), "run", "--path", opts.dataDir, "--port", String(port), "--host", host],
    // The banner and Rust logs are noise on our stdout; keep the tail of stderr for a start-up failure message.
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderrTail = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderrTail = (stderrTail + d.toString("utf8")).slice(-2000);
  });
  // If this process exits without calling stop() (an uncaught error, process.exit), do not leave Chroma orphaned.
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  const url = `http://${host}:${port}`;
  const server: ChromaServer = {
    url,
    port,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = exited(child);
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await done;
      clearTimeout(timer);
    },
  };

  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`Chroma server exited during start (code ${child.exitCode}): ${stderrTail.trim()}`);
    }
    try {
      const res = await fetch(`${url}/api/v2/heartbeat`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) return server;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await server.stop();
  throw new Error(`Chroma server did not answer ${url}/api/v2/heartbeat in time: ${stderrTail.trim()}`);
}
