/**
 * Spend per key and per team in the current UTC calendar month, for monthly budgets. PostgreSQL's usage rows are the
 * record (every replica writes them, at the prices of the deployment that answered), summed per key, team and month
 * by a trigger into spend_monthly (migration 8: a read is one row whatever the traffic, and usage retention does not
 * lower a month's spend); each process reads a scope's total when it first needs it and again in the background
 * once it is `refreshMs` old, and adds what it served itself in between, so its own requests count at once. The rows
 * this process has not written yet are counted from the usage writer's buffer; a row committing while the total is
 * read may count twice (a budget errs on the side of stopping early), never zero times.
 *
 * What one replica served reaches the others within the usage flush (about 1 s) plus `refreshMs`: a fleet can
 * overshoot a budget by about that much spend, plus the requests in flight when it is reached (a request's cost is
 * known only when its answer is). While PostgreSQL is unreachable the last sum is kept and the process goes on
 * adding its own spend, trying again every 30 s; a scope never read before waits for its first read at most 1 s,
 * then counts from zero.
 */
import type pg from "pg";
import type { Logger } from "pino";
import { Counter } from "prom-client";
import { registry } from "../metrics";
import type { UsageSink } from "../ports";
import { errorSummary } from "./postgres";

export type SpendScope = "key" | "team";

export const spendReadErrors = new Counter({
  name: "llmproxy_spend_read_errors_total",
  help: "Reads of a key's or team's monthly spend from PostgreSQL that failed (budgets then use what this process saw).",
  registers: [registry],
});

export interface SpendTracker {
  /** USD spent this UTC month by a key or a team (its keys together). */
  spent(scope: SpendScope, id: string): Promise<number>;
  /** A finished request's cost, counted at once for its key and its team. */
  add(keyId: string | null, teamId: string | null, usd: number | null): void;
  /**
   * This month's spend of many keys or teams in one query (for the admin API): PostgreSQL's totals plus this
   * process's rows not yet written. Ids without spend map to 0.
   */
  monthToDate(scope: SpendScope, ids: readonly string[]): Promise<Map<string, number>>;
}

export interface SpendTrackerArgs {
  pool: pg.Pool;
  log: Logger;
  usage?: Pick<UsageSink, "pendingCosts">;
  /** How old a sum may get before it is read again, in the background. Default 5 000 ms. */
  refreshMs?: number;
  now?: () => number;
}

interface Entry {
  /** Start of the month the sums are for, epoch ms (UTC). */
  month: number;
  /** PostgreSQL's sum plus the unwritten rows, when last read. */
  base: number;
  /** This process's spend since then. */
  local: number;
  /** When `base` was read (0: never). */
  at: number;
  /** When to read it again (0: at once, and wait for it). */
  next: number;
  refreshing: Promise<void> | null;
  /** The first read, bounded by FIRST_READ_WAIT_MS: every request arriving before it settles waits on it. */
  first: Promise<void> | null;
}

/** Entries are a few numbers each; past this many (keys and teams seen this month) the map starts over. */
const MAX_ENTRIES = 100_000;
/** The first read of a scope holds its request at most this long; after that it goes on without waiting. */
const FIRST_READ_WAIT_MS = 1_000;
/** After a failed read, the next one is tried this much later (in the background). */
const FAILED_READ_RETRY_MS = 30_000;
/**
 * A read is one or a few rows of spend_monthly (kept by a trigger on usage, see migration 8), so it is cheap;
 * reads are still spaced at least this many times their own duration apart, should PostgreSQL be slow.
 */
const READ_SPACING = 20;

/**
 * Spend of keys or teams in one month ($2, its first day), by id ($1). A key's includes the keys it replaced by
 * rotation (the same holder, a new secret).
 */
const KEYS_SPENT_SQL = `
WITH RECURSIVE chain(root, id, rotated_from, depth) AS (
  SELECT i, i, k.rotated_from, 0 FROM unnest($1::uuid[]) AS i LEFT JOIN api_keys k ON k.id = i
  UNION ALL
  SELECT c.root, k.id, k.rotated_from, c.depth + 1 FROM api_keys k JOIN chain c ON k.id = c.rotated_from
   WHERE c.depth < 100
)
SELECT c.root::text AS id, COALESCE(sum(s.cost_usd), 0)::float8 AS spent
  FROM chain c LEFT JOIN spend_monthly s ON s.month = $2::date AND s.scope = 'key' AND s.id = c.id
 GROUP BY c.root`;
const TEAMS_SPENT_SQL = `SELECT id::text AS id, cost_usd::float8 AS spent FROM spend_monthly
 WHERE month = $2::date AND scope = 'team' AND id = ANY($1::uuid[])`;

/** What PostgreSQL holds for these ids in the month starting at `month`; ids without spend are absent. */
async function storedSpend(
  pool: pg.Pool,
  scope: SpendScope,
  ids: readonly string[],
  month: Date,
): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ id: string; spent: number }>(
    scope === "key" ? KEYS_SPENT_SQL : TEAMS_SPENT_SQL,
    [ids, month.toISOString().slice(0, 10)],
  );
  return new Map(rows.map((r) => [r.id, Number(r.spent)]));
}

export function monthStart(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

export function createSpendTracker(args: SpendTrackerArgs): SpendTracker {
  const refreshMs = args.refreshMs ?? 5_000;
  const now = args.now ?? Date.now;
  const entries = new Map<string, Entry>();
  let lastWarned = 0;

  async function read(scope: SpendScope, id: string, e: Entry): Promise<void> {
    const since = new Date(e.month);
    const unwritten = args.usage?.pendingCosts?.(scope, since).get(id) ?? 0;
    const localBefore = e.local;
    const started = now();
    try {
      const stored = await storedSpend(args.pool, scope, [id], since);
      e.base = (stored.get(id) ?? 0) + unwritten;
      // What this process served before the snapshot is in the sum now; what it served since stays local.
      e.local -= localBefore;
      e.at = now();
      e.next = e.at + Math.max(refreshMs, (e.at - started) * READ_SPACING);
    } catch (error) {
      spendReadErrors.inc();
      e.next = now() + FAILED_READ_RETRY_MS;
      if (now() - lastWarned > 60_000) {
        lastWarned = now();
        args.log.warn(
          { err: errorSummary(error) },
          "spend not read from PostgreSQL; budgets use what this process saw",
        );
      }
    }
  }

  function refresh(scope: SpendScope, id: string, e: Entry): Promise<void> {
    e.refreshing ??= read(scope, id, e).finally(() => {
      e.refreshing = null;
    });
    return e.refreshing;
  }

  return {
    async spent(scope, id) {
      const t = now();
      const month = monthStart(t);
      const k = `${scope}:${id}`;
      let e = entries.get(k);
      if (!e || e.month !== month) {
        if (entries.size >= MAX_ENTRIES) entries.clear();
        e = { month, base: 0, local: 0, at: 0, next: 0, refreshing: null, first: null };
        entries.set(k, e);
      }
      if (e.next === 0) {
        e.next = t + FAILED_READ_RETRY_MS; // until the read settles
        let timer: NodeJS.Timeout | undefined;
        const entry = e;
        e.first = Promise.race([
          refresh(scope, id, e),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, FIRST_READ_WAIT_MS))),
        ]).finally(() => {
          clearTimeout(timer);
          entry.first = null;
        });
      } else if (t >= e.next) void refresh(scope, id, e);
      // Until the first read is in (or its wait is over), nobody is told "nothing spent yet".
      if (e.first) await e.first;
      return e.base + e.local;
    },
    async monthToDate(scope, ids) {
      if (!ids.length) return new Map();
      const since = new Date(monthStart(now()));
      // Unwritten rows first, as in read(): a row written meanwhile is then counted twice at worst, never zero times.
      // (A rotated key's predecessors' unwritten rows are not added: they are written within the usage flush.)
      const unwritten = args.usage?.pendingCosts?.(scope, since) ?? new Map<string, number>();
      const stored = await storedSpend(args.pool, scope, ids, since);
      return new Map(ids.map((id) => [id, (stored.get(id) ?? 0) + (unwritten.get(id) ?? 0)]));
    },
    add(keyId, teamId, usd) {
      if (!usd || !(usd > 0)) return;
      const month = monthStart(now());
      for (const k of [keyId && `key:${keyId}`, teamId && `team:${teamId}`]) {
        if (!k) continue;
        const e = entries.get(k);
        if (e && e.month === month) e.local += usd;
      }
    },
  };
}
