/**
 * SQL migrations, kept in TypeScript so the compiled dist carries them. `migrate()` runs at start: it takes a
 * session-level advisory lock on one dedicated connection, so when N replicas start together one applies the
 * pending migrations and the others wait, then find nothing left to do. Each migration runs in its own
 * transaction together with its `schema_migrations` row, so a crash leaves it either applied and recorded or
 * neither. The SQL runs unchanged on PostgreSQL 15+ and on PGlite (PostgreSQL 18 in WASM).
 */
import crypto from "node:crypto";
import type pg from "pg";
import type { Logger } from "pino";
import { errorSummary } from "./postgres";

export interface Migration {
  /** Applied in ascending order; never renumber or edit an applied migration, add a new one. */
  id: number;
  name: string;
  sql: string;
}

/** Arbitrary constant shared by every replica: "llm-proxy migrations". */
export const MIGRATION_LOCK_KEY = 7_141_994_028_311;

export const MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: "teams_and_api_keys",
    sql: `
CREATE TABLE teams (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name                text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  -- Limit overrides: NULL = the configured default, 0 = blocked.
  requests_per_minute integer CHECK (requests_per_minute >= 0),
  tokens_per_minute   bigint  CHECK (tokens_per_minute >= 0),
  tokens_per_day      bigint  CHECK (tokens_per_day >= 0),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  -- SHA-256 hex of the key; the key itself is never stored.
  key_hash            text NOT NULL UNIQUE,
  prefix              text NOT NULL,
  -- Deleting a team is refused while it has active keys; its revoked or expired keys lose the reference.
  team_id             uuid REFERENCES teams (id) ON DELETE SET NULL,
  scopes              text[] NOT NULL DEFAULT '{}',
  expires_at          timestamptz,
  revoked_at          timestamptz,
  rotated_from        uuid REFERENCES api_keys (id) ON DELETE SET NULL,
  requests_per_minute integer CHECK (requests_per_minute >= 0),
  tokens_per_minute   bigint  CHECK (tokens_per_minute >= 0),
  tokens_per_day      bigint  CHECK (tokens_per_day >= 0),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  last_used_at        timestamptz
);
CREATE INDEX api_keys_team_id_idx ON api_keys (team_id);
CREATE INDEX api_keys_rotated_from_idx ON api_keys (rotated_from);
`,
  },
  {
    id: 2,
    name: "usage",
    sql: `
-- One row per request. No foreign keys: history outlives keys and teams, and a write never fails on a reference.
CREATE TABLE usage (
  -- The primary key makes replays (retries after an outage, the on-disk spool) idempotent.
  request_id        uuid PRIMARY KEY,
  created_at        timestamptz NOT NULL,
  key_id            uuid,
  team_id           uuid,
  route             text NOT NULL,
  requested_model   text,
  served_model      text,
  provider          text,
  prompt_tokens     integer NOT NULL DEFAULT 0,
  completion_tokens integer NOT NULL DEFAULT 0,
  latency_ms        integer NOT NULL DEFAULT 0,
  status            smallint NOT NULL,
  error_code        text,
  stream            boolean NOT NULL DEFAULT false,
  cache_hit         boolean NOT NULL DEFAULT false,
  -- Entity counts only, never values.
  pii_counts        jsonb
);
-- The usage report filters by time and groups by key, team, model or day.
CREATE INDEX usage_created_at_idx ON usage (created_at);
CREATE INDEX usage_key_created_idx ON usage (key_id, created_at);
CREATE INDEX usage_team_created_idx ON usage (team_id, created_at);
`,
  },
  {
    id: 3,
    name: "usage_cost",
    sql: `
-- Prompt tokens served from the provider's prompt cache, and the cost at the served deployment's configured prices
-- (NULL: tokens were served but no price is configured). numeric, so sums over months stay exact.
ALTER TABLE usage
  ADD COLUMN cached_tokens integer NOT NULL DEFAULT 0,
  ADD COLUMN cost_usd      numeric(20, 10);
`,
  },
  {
    id: 4,
    name: "audit_log",
    sql: `
-- One row per successful admin change, written in the change's own transaction. No foreign keys: the trail outlives
-- the keys and teams it names. Never holds a key, a key hash or any other secret.
CREATE TABLE audit_events (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  at          timestamptz NOT NULL DEFAULT now(),
  -- \`master\` for the master key, \`key:<id>\` for an API key (knowledge-base writes with kb:write).
  actor       text NOT NULL,
  -- <target>.<past tense>: team.created, key.rotated, kb.reset …
  action      text NOT NULL,
  target_type text NOT NULL,
  target_id   text NOT NULL,
  request_id  text,
  client_ip   text,
  -- {field: {before, after}}: the fields an update changed; every field for a creation (before null) or a deletion
  -- (after null). Counts, never content, for knowledge-base changes.
  changes     jsonb NOT NULL DEFAULT '{}'
);
-- GET /internal/audit pages newest first by (at, id), optionally within one action or one target.
CREATE INDEX audit_events_at_idx ON audit_events (at, id);
CREATE INDEX audit_events_target_idx ON audit_events (target_id, at, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, at, id);
`,
  },
  {
    id: 5,
    name: "allowed_models",
    sql: `
-- Which client-facing model names a key or a team may use; NULL = every model. A key's request must pass both.
ALTER TABLE teams ADD COLUMN allowed_models text[];
ALTER TABLE api_keys ADD COLUMN allowed_models text[];
`,
  },
  {
    id: 6,
    name: "usage_cache_write_tokens",
    sql: `
-- Prompt tokens the provider wrote to its prompt cache (Anthropic bills them above the input price).
ALTER TABLE usage ADD COLUMN cache_write_tokens integer NOT NULL DEFAULT 0;
`,
  },
  {
    id: 7,
    name: "monthly_budgets",
    sql: `
-- Spend allowed per UTC calendar month, in USD, at the configured prices; NULL = no budget, 0 = blocked.
ALTER TABLE teams ADD COLUMN budget_usd_per_month numeric;
ALTER TABLE api_keys ADD COLUMN budget_usd_per_month numeric;
`,
  },
  {
    id: 8,
    name: "spend_monthly",
    sql: `
-- Spend per key and per team and UTC calendar month, kept by a trigger on usage: a budget check reads one row
-- instead of summing the month's usage rows, and usage retention (which deletes rows) does not lower it.
-- The trigger is per statement, on the rows the statement really inserted (a COPY batch, or an INSERT whose
-- ON CONFLICT DO NOTHING skipped rows already stored), so each row counts once whoever writes it, replicas of an
-- older version during a rolling upgrade included.
CREATE TABLE spend_monthly (
  month    date    NOT NULL,
  scope    text    NOT NULL CHECK (scope IN ('key', 'team')),
  id       uuid    NOT NULL,
  cost_usd numeric NOT NULL,
  PRIMARY KEY (month, scope, id)
);

-- The function resolves spend_monthly with the search_path it was created with, not the inserting session's.
CREATE FUNCTION usage_spend_rollup() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
  INSERT INTO spend_monthly AS s (month, scope, id, cost_usd)
  SELECT month, scope, id, sum(cost_usd) FROM (
    SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, 'key' AS scope, key_id AS id, cost_usd
      FROM new_rows WHERE key_id IS NOT NULL AND cost_usd > 0
    UNION ALL
    SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date, 'team', team_id, cost_usd
      FROM new_rows WHERE team_id IS NOT NULL AND cost_usd > 0
  ) AS c
  GROUP BY month, scope, id
  -- One order for every writer: two batches touching the same rows lock them in the same order (no deadlock).
  ORDER BY month, scope, id
  ON CONFLICT (month, scope, id) DO UPDATE SET cost_usd = s.cost_usd + EXCLUDED.cost_usd;
  RETURN NULL;
END
$fn$;

-- No insert may commit between the backfill's read and the trigger: every row is counted by exactly one of them.
-- Usage writers wait behind the lock (their rows stay buffered); if it cannot be had within 10 s the migration
-- fails and is tried again at the next start, instead of queueing every writer behind a long wait.
SET LOCAL lock_timeout = '10s';
LOCK TABLE usage IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER usage_spend_rollup AFTER INSERT ON usage
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_spend_rollup();

-- Budgets read the current month only: the backfill covers it and the month before (through the created_at index),
-- not the whole history, so the lock is held briefly.
WITH recent AS (
  SELECT created_at, key_id, team_id, cost_usd FROM usage
   WHERE created_at >= (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month') AT TIME ZONE 'UTC'
)
INSERT INTO spend_monthly (month, scope, id, cost_usd)
SELECT month, scope, id, sum(cost_usd) FROM (
  SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, 'key' AS scope, key_id AS id, cost_usd
    FROM recent WHERE key_id IS NOT NULL AND cost_usd > 0
  UNION ALL
  SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date, 'team', team_id, cost_usd
    FROM recent WHERE team_id IS NOT NULL AND cost_usd > 0
) AS c
GROUP BY month, scope, id;
`,
  },
  {
    id: 9,
    name: "api_keys_rotation_root",
    sql: `
-- The first key of each key's rotation chain (NULL: the key replaced none). The rate limiter keeps a key's windows
-- under it, so a replacement goes on in the minute and the day of the key it replaced instead of starting afresh.
-- No foreign key: it only names the windows, and outlives the key it names.
ALTER TABLE api_keys ADD COLUMN rotation_root uuid;
WITH RECURSIVE chain(id, root) AS (
  SELECT id, id FROM api_keys WHERE rotated_from IS NULL
  UNION ALL
  SELECT k.id, c.root FROM api_keys k JOIN chain c ON k.rotated_from = c.id
)
UPDATE api_keys k SET rotation_root = c.root FROM chain c WHERE k.id = c.id AND k.rotated_from IS NOT NULL;
`,
  },
];

function checksum(sql: string): string {
  return crypto.createHash("sha256").update(sql).digest("hex");
}

export interface MigrateResult {
  /** Ids of the migrations this call applied (empty when another replica had applied them). */
  applied: number[];
}

export interface MigrateOptions {
  log: Logger;
  migrations?: readonly Migration[];
  /** How long to wait for the lock and run the migrations, in ms. Default 300 000. */
  timeoutMs?: number;
}

/** Apply pending migrations once across every replica (see the module comment). */
export async function migrate(pool: pg.Pool, opts: MigrateOptions): Promise<MigrateResult> {
  const migrations = [...(opts.migrations ?? MIGRATIONS)].sort((a, b) => a.id - b.id);
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const client = await pool.connect();
  let locked = false;
  let broken = false;
  try {
    // The pool's statement_timeout is sized for requests; waiting for another replica's migrations needs longer.
    await client.query(`SET statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
    const waitStart = Date.now();
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    locked = true;
    const waitedMs = Date.now() - waitStart;
    if (waitedMs > 1000) opts.log.info({ waitedMs }, "waited for another replica's migrations");

    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      id         integer PRIMARY KEY,
      name       text NOT NULL,
      checksum   text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ id: number; checksum: string }>(
      "SELECT id, checksum FROM schema_migrations",
    );
    const done = new Map(rows.map((r) => [r.id, r.checksum]));
    const applied: number[] = [];
    for (const m of migrations) {
      const existing = done.get(m.id);
      if (existing !== undefined) {
        if (existing !== checksum(m.sql)) {
          opts.log.warn(
            { migration: m.id, name: m.name },
            "an applied migration was edited since; add a new one",
          );
        }
        continue;
      }
      const started = Date.now();
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO schema_migrations (id, name, checksum) VALUES ($1, $2, $3)", [
          m.id,
          m.name,
          checksum(m.sql),
        ]);
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw new Error(`Migration ${m.id} (${m.name}) failed: ${errorSummary(error).message}`, {
          cause: error,
        });
      }
      applied.push(m.id);
      opts.log.info({ migration: m.id, name: m.name, ms: Date.now() - started }, "migration applied");
    }
    return { applied };
  } catch (error) {
    broken = true;
    throw error;
  } finally {
    if (locked)
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch(() => undefined);
    await client.query("RESET statement_timeout").catch(() => undefined);
    // A connection that failed mid-migration is discarded rather than returned to the pool.
    client.release(broken ? true : undefined);
  }
}
