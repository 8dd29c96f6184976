/**
 * Usage retention: a usage row per request grows the table without bound (86 million rows a day at 1 000 req/s), so
 * with `usage.retention_days` set, rows older than that are deleted — in batches of `batchRows` (each its own short
 * statement, through the created_at index, so no long lock and no huge transaction), a pass every `intervalMs`.
 *
 * Every worker of every replica schedules passes (with jitter), and a pass runs only in the process that takes a
 * session-level advisory lock on a dedicated connection, so at most one pass runs across the fleet; if that process
 * dies, its connection closes, the lock goes with it and the next pass elsewhere takes over.
 */
import type pg from "pg";
import type { Logger } from "pino";
import { Counter } from "prom-client";
import { registry } from "../metrics";
import { errorSummary } from "./postgres";

export const usageRowsExpired = new Counter({
  name: "llmproxy_usage_rows_expired_total",
  help: "Usage rows deleted because they were older than usage.retention_days.",
  registers: [registry],
});

/** Distinct from the migration lock (migrations.ts). */
export const RETENTION_LOCK_KEY = 7_141_994_028_312;

export interface UsageRetentionArgs {
  pool: pg.Pool;
  log: Logger;
  retentionDays: number;
  /** Time between passes, in ms. Default one hour (± 10 % jitter). */
  intervalMs?: number;
  /** Delay of the first pass, in ms (plus up to as much again in jitter). Default one minute. */
  firstPassMs?: number;
  /** Rows per DELETE. Default 5 000. */
  batchRows?: number;
  /**
   * Pause between two DELETEs, in ms (default 50): a first pass over months of history must not flood the WAL and
   * the replicas. The pass holds one pool connection (the lock's session) while it runs.
   */
  pauseMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export type PassResult = { ran: false } | { ran: true; deleted: number };

export interface UsageRetention {
  /** One pass now: deletes every expired row unless another process holds the lock. */
  runOnce(): Promise<PassResult>;
  stop(): Promise<void>;
}

const DELETE_SQL = `
DELETE FROM usage WHERE request_id IN (
  SELECT request_id FROM usage WHERE created_at < $1 ORDER BY created_at LIMIT $2
)`;

export function startUsageRetention(args: UsageRetentionArgs): UsageRetention {
  const { pool, log } = args;
  const intervalMs = args.intervalMs ?? 3_600_000;
  const firstPassMs = args.firstPassMs ?? 60_000;
  const batchRows = args.batchRows ?? 5_000;
  const pauseMs = args.pauseMs ?? 50;
  const now = args.now ?? Date.now;
  let stopped = false;
  let running: Promise<PassResult> | null = null;
  let timer: NodeJS.Timeout | undefined;

  async function pass(): Promise<PassResult> {
    const client = await pool.connect();
    let locked = false;
    try {
      const got = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [
        RETENTION_LOCK_KEY,
      ]);
      locked = got.rows[0]?.ok === true;
      if (!locked) return { ran: false };
      const cutoff = new Date(now() - args.retentionDays * 86_400_000);
      let deleted = 0;
      for (;;) {
        const res = await client.query(DELETE_SQL, [cutoff, batchRows]);
        const n = res.rowCount ?? 0;
        deleted += n;
        usageRowsExpired.inc(n);
        if (n < batchRows || stopped) break;
        await new Promise((r) => setTimeout(r, pauseMs));
      }
      if (deleted > 0) {
        log.info({ deleted, before: cutoff.toISOString() }, "usage retention: expired rows deleted");
      }
      return { ran: true, deleted };
    } finally {
      // A connection whose unlock failed may still hold the lock: destroy it rather than pool it, or no process
      // could run a pass until the pool recycled it.
      let unlockFailed: Error | undefined;
      if (locked) {
        await client.query("SELECT pg_advisory_unlock($1)", [RETENTION_LOCK_KEY]).catch((error: Error) => {
          unlockFailed = error;
        });
      }
      client.release(unlockFailed);
    }
  }

  function runOnce(): Promise<PassResult> {
    running ??= pass().finally(() => (running = null));
    return running;
  }

  // The first pass soon after start, so that frequent restarts (deploys) do not keep postponing it.
  function schedule(first = false): void {
    if (stopped) return;
    const delay = first ? firstPassMs * (1 + Math.random()) : intervalMs * (0.9 + Math.random() * 0.2);
    timer = setTimeout(() => {
      runOnce()
        .catch((error: unknown) =>
          log.warn({ err: errorSummary(error) }, "usage retention: pass failed; retrying at the next one"),
        )
        .finally(() => schedule());
    }, delay);
    timer.unref();
  }
  schedule(true);

  return {
    runOnce,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
