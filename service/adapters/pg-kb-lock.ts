/**
 * The knowledge base's cross-process write lock: a PostgreSQL session-level advisory lock per collection, held on a
 * dedicated pooled connection for the length of one write (upload, ingest, delete, reset). Every worker and replica
 * writing the same collection takes the same lock, so one's directory walk and stale-source check never run beside
 * another's upload, and two versions of one source never interleave their upserts and leftover deletes.
 *
 * Not used with the embedded PGlite: it has a single connection, which a long ingest would hold away from every
 * request, and the embedded default runs one process anyway (its in-process queue is enough).
 */
import type pg from "pg";
import { ServiceUnavailableError } from "../errors";

/** Runs `fn` while holding the cross-process lock named `name` (a knowledge-base collection). */
export type WriteLock = <T>(name: string, fn: () => Promise<T>) => Promise<T>;

/** First key of the two-key advisory lock space for knowledge-base collections (the second is the name's hash). */
export const KB_LOCK_NAMESPACE = 714_199_403;

export interface PgKbLockOptions {
  pool: pg.Pool;
  /** How long a write waits for another process's write on the same collection, in ms. Default 300 000. */
  waitMs?: number;
}

export function createPgKbLock(opts: PgKbLockOptions): WriteLock {
  const waitMs = Math.max(1, Math.floor(opts.waitMs ?? 300_000));
  return async function withKbLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await opts.pool.connect();
    } catch {
      throw new ServiceUnavailableError(
        "knowledge-base writes need the database for their lock, which does not answer",
        "kb_unavailable",
      );
    }
    let broken = false;
    try {
      // The pool's timeouts are sized for requests; waiting for another process's ingest needs longer.
      await client.query(`SET statement_timeout = ${waitMs}`);
      try {
        await client.query({
          text: "SELECT pg_advisory_lock($1, hashtext($2))",
          values: [KB_LOCK_NAMESPACE, name],
          query_timeout: waitMs + 5_000,
        } as pg.QueryConfig);
      } catch {
        broken = true;
        throw new ServiceUnavailableError(
          `another knowledge-base write on collection ${name} is still running; retry later`,
          "kb_busy",
        );
      }
      try {
        return await fn();
      } finally {
        await client
          .query("SELECT pg_advisory_unlock($1, hashtext($2))", [KB_LOCK_NAMESPACE, name])
          .catch(() => {
            broken = true; // the session ends with the connection, and its lock with it
          });
      }
    } finally {
      if (!broken) await client.query("RESET statement_timeout").catch(() => (broken = true));
      client.release(broken ? true : undefined);
    }
  };
}
