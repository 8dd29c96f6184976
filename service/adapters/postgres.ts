/**
 * The PostgreSQL connection pool. Every setting that keeps a request from hanging when PostgreSQL is down lives here:
 * a connect timeout, a server-side statement timeout and a client-side query timeout. TLS comes from the URL's
 * `sslmode` (libpq semantics) and `DATABASE_CA`, which always means verification (see sslOptions).
 */
import type { ConnectionOptions } from "node:tls";
import pg from "pg";
import type { Logger } from "pino";
import type { Database } from "../ports";

export interface PostgresArgs {
  /** `postgres://user:pass@host:5432/db?sslmode=require`; the password is never logged. */
  url: string;
  /** PEM of the server's CA; when given, TLS is verified in full (chain and host name). */
  ca?: string | null;
  log: Logger;
  /** Pool size. Default 10; must be 1 against PGlite (see pglite.ts). */
  max?: number;
  /** Server-side `statement_timeout` in ms. Default 30 000. */
  statementTimeoutMs?: number;
  /** Time to open a connection (or wait for a free one) in ms. Default 5 000. */
  connectionTimeoutMs?: number;
  /** `ping()` gives up after this many ms. Default 2 000. */
  pingTimeoutMs?: number;
  /** Close connections idle this long, in ms; 0 keeps them. Default 30 000. */
  idleTimeoutMs?: number;
  /** Replace connections after this many seconds (picks up a failover behind DNS); 0 = never. Default 600. */
  maxLifetimeSeconds?: number;
}

export interface PostgresHandle {
  pool: pg.Pool;
  db: Database;
}

/** The URL with its password replaced, for logs and error messages. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable database URL)";
  }
}

/** URL parameters that describe TLS; pg would let them override our `ssl` option, so they are taken out. */
const SSL_PARAMS = ["sslmode", "ssl", "sslcert", "sslkey", "sslrootcert", "uselibpqcompat"];

/**
 * TLS settings from `sslmode` and an optional CA, following libpq: `disable`/`allow`/`prefer` (and no sslmode) → no
 * TLS; `require` → encrypted without verification; `verify-ca` → chain verified; `verify-full` → chain and host
 * name verified. A CA (`DATABASE_CA`) always means verification: `verify-ca` with it checks the chain only (Cloud SQL
 * on a private IP, whose certificate does not name the address), any other mode the chain and the host name.
 * Returns the URL without the TLS parameters.
 */
export function sslOptions(
  url: string,
  ca?: string | null,
): { connectionString: string; ssl: false | ConnectionOptions } {
  const u = new URL(url);
  const mode = (
    u.searchParams.get("sslmode") ?? (u.searchParams.get("ssl") === "true" ? "require" : "")
  ).toLowerCase();
  for (const p of SSL_PARAMS) u.searchParams.delete(p);
  const connectionString = u.toString();
  // Chain only: libpq's verify-ca does not check the host name.
  const chainOnly = { rejectUnauthorized: true, checkServerIdentity: () => undefined };
  if (ca) {
    return {
      connectionString,
      ssl: mode === "verify-ca" ? { ca, ...chainOnly } : { ca, rejectUnauthorized: true },
    };
  }
  switch (mode) {
    case "require":
      return { connectionString, ssl: { rejectUnauthorized: false } };
    case "verify-ca":
      return { connectionString, ssl: chainOnly };
    case "verify-full":
      return { connectionString, ssl: { rejectUnauthorized: true } };
    default:
      return { connectionString, ssl: false };
  }
}

export function createPostgres(args: PostgresArgs): PostgresHandle {
  const { connectionString, ssl } = sslOptions(args.url, args.ca);
  const statementTimeoutMs = args.statementTimeoutMs ?? 30_000;
  const pingTimeoutMs = args.pingTimeoutMs ?? 2_000;
  const pool = new pg.Pool({
    connectionString,
    ssl,
    max: args.max ?? 10,
    connectionTimeoutMillis: args.connectionTimeoutMs ?? 5_000,
    idleTimeoutMillis: args.idleTimeoutMs ?? 30_000,
    maxLifetimeSeconds: args.maxLifetimeSeconds ?? 600,
    keepAlive: true,
    application_name: "llm-proxy",
    statement_timeout: statementTimeoutMs,
    // The client-side bound: a half-open TCP connection answers nothing, not even the server's timeout.
    query_timeout: statementTimeoutMs + 5_000,
    idle_in_transaction_session_timeout: 60_000,
  });
  const redacted = redactDatabaseUrl(args.url);
  // An idle client losing its connection emits 'error' on the pool; without a listener the process would crash.
  pool.on("error", (error) =>
    args.log.warn({ err: errorSummary(error), db: redacted }, "idle PostgreSQL connection failed"),
  );

  const db: Database = {
    async ping() {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), pingTimeoutMs);
      });
      const query = pool.query({ text: "SELECT 1", query_timeout: pingTimeoutMs } as pg.QueryConfig).then(
        () => true,
        () => false,
      );
      try {
        return await Promise.race([query, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      await pool.end();
    },
  };
  args.log.debug({ db: redacted, tls: ssl ? "on" : "off" }, "PostgreSQL pool created");
  return { pool, db };
}

/** Message and code only: pg errors can carry the query's parameters, which may be sensitive. */
export function errorSummary(error: unknown): { message: string; code?: string } {
  const e = error as { message?: string; code?: string };
  return { message: String(e?.message ?? error), ...(e?.code ? { code: e.code } : {}) };
}
