/**
 * Start-up failures a user can fix, told as one line naming the setting and the fix instead of a stack trace: the
 * listen address (port in use, an address the machine does not have, a privileged port) and PostgreSQL (not reachable
 * yet, a missing database, refused credentials). A database that is not reachable yet is waited for — in Kubernetes
 * the proxy often starts before its database or its DNS name is ready — for DATABASE_WAIT_SECONDS.
 */
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { codeOf, isDatabaseUnreachable } from "../errors";

/** A worker's exit code for a start-up failure it printed and no replacement would get past (EX_CONFIG). */
export const EXIT_CANNOT_START = 78;

/** A start-up failure whose message is the whole story (main.ts prints it without a stack). */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StartupError";
  }
}

/** The fix for a failed `server.listen`, or null when the failure is not one of the address's. */
export function listenProblem(error: unknown, host: string, port: number): string | null {
  const where = `${host}:${port}`;
  switch (codeOf(error)) {
    case "EADDRINUSE":
      return `env PORT: ${where} is already in use (EADDRINUSE); stop what listens there or set PORT to a free port`;
    case "EADDRNOTAVAIL":
      return `env HOST: ${host} is not an address of this machine (EADDRNOTAVAIL); set HOST to one of its addresses, or 0.0.0.0 for all of them`;
    case "EACCES":
    case "EPERM":
      return `env PORT: listening on ${where} is not permitted (${codeOf(error)}); ports below 1024 need privileges, use one above 1023`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_FAIL":
      return `env HOST: ${host} does not resolve to an address (${codeOf(error)}); set HOST to an IP address, or 0.0.0.0 for all of them`;
    case "EAFNOSUPPORT":
      return `env HOST: ${host} is of an address family this machine does not support (EAFNOSUPPORT); use an IPv4 address or 0.0.0.0`;
    default:
      return null;
  }
}

/** Where the database is, without user or password: for messages. */
export function databaseTarget(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || "5432"}${u.pathname}`;
  } catch {
    return "(the DATABASE_URL's server)";
  }
}

/**
 * The message for a database failure that waiting does not fix, naming DATABASE_URL and never its credentials
 * (pg's messages hold neither the URL nor the password).
 */
export function databaseProblem(error: unknown, url: string, waitedSeconds: number | null): string {
  const target = databaseTarget(url);
  const code = codeOf(error);
  const reason = ((error as Error | null)?.message ?? String(error)).split("\n")[0];
  if (waitedSeconds !== null) {
    return `env DATABASE_URL: PostgreSQL at ${target} is not reachable (${code || reason}) after waiting ${waitedSeconds} s; check the host and port, or raise DATABASE_WAIT_SECONDS`;
  }
  switch (code) {
    case "3D000":
      return `env DATABASE_URL: ${reason} at ${target}; create it (CREATE DATABASE) or point DATABASE_URL at an existing one`;
    case "28P01":
    case "28000":
      return `env DATABASE_URL: PostgreSQL at ${target} refused the credentials (${reason}); check the user and password in DATABASE_URL`;
    case "42501":
      return `env DATABASE_URL: the user lacks a privilege the migrations need at ${target} (${reason}); grant it CREATE on the database, or run the first start as its owner`;
    default:
      return `env DATABASE_URL: PostgreSQL at ${target} failed: ${reason}${code ? ` (${code})` : ""}`;
  }
}

/**
 * Runs `attempt` until it succeeds, retrying failures that pass (see TRANSIENT) with a growing pause for up to
 * `waitSeconds`; any other failure, or the wait running out, is a StartupError naming DATABASE_URL.
 */
export async function withDatabase<T>(
  attempt: () => Promise<T>,
  opts: { url: string; waitSeconds: number; log: Logger },
): Promise<T> {
  const started = Date.now();
  const deadline = started + opts.waitSeconds * 1000;
  let pause = 250;
  let logged = false;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (error instanceof StartupError) throw error;
      if (!isDatabaseUnreachable(error))
        throw new StartupError(databaseProblem(error, opts.url, null), { cause: error });
      const left = deadline - Date.now();
      if (left <= 0) {
        const waited = Math.round((Date.now() - started) / 1000);
        throw new StartupError(databaseProblem(error, opts.url, waited), { cause: error });
      }
      if (!logged) {
        logged = true;
        opts.log.warn(
          {
            database: databaseTarget(opts.url),
            code: codeOf(error) || undefined,
            waitSeconds: opts.waitSeconds,
          },
          "PostgreSQL not reachable yet; waiting for it",
        );
      }
      await sleep(Math.min(pause, left));
      pause = Math.min(pause * 2, 4000);
    }
  }
}

/**
 * `dir` (under DATA_DIR) exists and takes a file, or a StartupError naming DATA_DIR and the fix: the usage spool is
 * where rows go when PostgreSQL is down at a stop, and finding out then would lose them.
 */
export function requireWritableDir(dir: string, what: string): void {
  const probe = path.join(dir, `.write-check-${process.pid}`);
  try {
    fs.mkdirSync(dir, { recursive: true });
    const fd = fs.openSync(probe, "w");
    try {
      fs.writeSync(fd, "ok");
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.unlinkSync(probe);
  } catch (error) {
    throw new StartupError(
      `env DATA_DIR: ${dir} cannot be written (${codeOf(error) || (error as Error).message}); ${what} lives there — point DATA_DIR at a writable directory (in Kubernetes, a writable volume)`,
      { cause: error },
    );
  }
}

/** Whether `pid` is a live process that could be another llm-proxy (not this one, and a node process). */
function liveProxy(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    return codeOf(error) === "EPERM"; // alive, someone else's
  }
  try {
    // A recycled pid of something else entirely is not a holder.
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("node");
  } catch {
    return true; // no /proc (macOS): trust the pid
  }
}

/**
 * Takes `<dataDir>/llm-proxy.lock` for this process, or a StartupError when a live llm-proxy holds it: the embedded
 * database (PGlite) and its Chroma must have one process at a time — two on one directory each keep their own copy,
 * and what one writes the other loses. A lock left by a process that died is taken over. Returns the release.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = path.join(path.resolve(dataDir), "llm-proxy.lock");
  const mine = `${file}.${process.pid}.${Date.now()}`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    // The pid goes in before the lock exists: link() makes it appear whole, never empty to a second instance.
    fs.writeFileSync(mine, `${process.pid}\n`);
  } catch (error) {
    throw new StartupError(
      `env DATA_DIR: cannot write in ${path.resolve(dataDir)} (${codeOf(error) || (error as Error).message}); point DATA_DIR at a writable directory`,
      { cause: error },
    );
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(mine, file);
        break;
      } catch (error) {
        if (codeOf(error) !== "EEXIST") throw error;
        const content = fs.readFileSync(file, "utf8");
        const holder = Number.parseInt(content, 10);
        if (attempt >= 2 || liveProxy(holder)) {
          throw new StartupError(
            `env DATA_DIR: ${path.resolve(dataDir)} is in use by another llm-proxy (pid ${holder}); the embedded database takes one process at a time — stop that one, or give this one another DATA_DIR`,
          );
        }
        // Left by a process that is gone: take it over, unless another instance did just now (the link then fails
        // again, and its pid is alive).
        try {
          if (fs.readFileSync(file, "utf8") === content) fs.unlinkSync(file);
        } catch {
          // gone meanwhile
        }
      }
    }
  } catch (error) {
    if (error instanceof StartupError) throw error;
    throw new StartupError(
      `env DATA_DIR: cannot take ${file} (${codeOf(error) || (error as Error).message}); point DATA_DIR at a writable directory`,
      { cause: error },
    );
  } finally {
    fs.rmSync(mine, { force: true });
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    try {
      if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.unlinkSync(file);
    } catch {
      // already gone
    }
  };
}
