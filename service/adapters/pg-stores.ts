/**
 * KeyStore, TeamStore and UsageReport over PostgreSQL. Every query is parameterized and unnamed: PGlite multiplexes
 * connections onto one backend, where named prepared statements would collide. Transactions hold one pooled client
 * and never wait on another, so a pool of one (PGlite) cannot deadlock. A change given an AuditContext records its
 * audit event on that same client, inside its transaction.
 */
import type pg from "pg";
import { ConflictError, InvalidRequestError } from "../errors";
import { auditChanges, keySnapshot, teamSnapshot } from "../lib/audit";
import { insertAuditEvent } from "./pg-audit";
import type {
  ApiKeyRecord,
  AuditContext,
  KeyLookup,
  KeyStore,
  LimitOverrides,
  NewAuditEvent,
  Team,
  TeamStore,
  UsageReport,
  UsageQuery,
  UsageReportRow,
} from "../ports";

const LIMIT_COLUMNS = {
  requestsPerMinute: "requests_per_minute",
  tokensPerMinute: "tokens_per_minute",
  tokensPerDay: "tokens_per_day",
} as const satisfies Record<keyof LimitOverrides, string>;

type Row = Record<string, unknown>;

function iso(value: unknown): string {
  return (value instanceof Date ? value : new Date(String(value))).toISOString();
}

function isoOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : iso(value);
}

/** bigint columns arrive as strings from pg. */
function intOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value);
}

function limitsFrom(row: Row, prefix = ""): LimitOverrides {
  return {
    requestsPerMinute: intOrNull(row[`${prefix}requests_per_minute`]),
    tokensPerMinute: intOrNull(row[`${prefix}tokens_per_minute`]),
    tokensPerDay: intOrNull(row[`${prefix}tokens_per_day`]),
  };
}

function toKey(row: Row): ApiKeyRecord {
  return {
    id: String(row.id),
    name: String(row.name),
    prefix: String(row.prefix),
    teamId: row.team_id === null ? null : String(row.team_id),
    scopes: (row.scopes as string[] | null) ?? [],
    expiresAt: isoOrNull(row.expires_at),
    revokedAt: isoOrNull(row.revoked_at),
    createdAt: iso(row.created_at),
    rotatedFrom: row.rotated_from === null ? null : String(row.rotated_from),
    rotationRoot: row.rotation_root === null ? null : String(row.rotation_root),
    limits: limitsFrom(row),
    allowedModels: (row.allowed_models as string[] | null) ?? null,
    budgetUsdPerMonth: numberOrNull(row.budget_usd_per_month),
  };
}

/** numeric comes back from pg as a string. */
function numberOrNull(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

function toTeam(row: Row): Team {
  return {
    id: String(row.id),
    name: String(row.name),
    limits: limitsFrom(row),
    allowedModels: (row.allowed_models as string[] | null) ?? null,
    budgetUsdPerMonth: numberOrNull(row.budget_usd_per_month),
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
  };
}

const KEY_COLUMNS = `id, name, prefix, team_id, scopes, expires_at, revoked_at, created_at, rotated_from,
  rotation_root, requests_per_minute, tokens_per_minute, tokens_per_day, allowed_models, budget_usd_per_month`;
const TEAM_COLUMNS =
  "id, name, requests_per_minute, tokens_per_minute, tokens_per_day, allowed_models, budget_usd_per_month, created_at, updated_at";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * `UPDATE … SET` clauses for the defined columns ($1 is the id) plus `updated_at`, and a condition true only when one
 * of them differs from the stored value (compared by PostgreSQL, in the column's type: the same instant written with
 * another offset is the same value). Null when the patch names no column.
 */
function updateSet(
  id: string,
  columns: Record<string, unknown>,
): { sets: string[]; changed: string; values: unknown[] } | null {
  const sets: string[] = [];
  const differs: string[] = [];
  const values: unknown[] = [id];
  for (const [column, value] of Object.entries(columns)) {
    if (value === undefined) continue;
    values.push(value);
    sets.push(`${column} = $${values.length}`);
    differs.push(`${column} IS DISTINCT FROM $${values.length}`);
  }
  if (!sets.length) return null;
  sets.push("updated_at = now()");
  return { sets, changed: differs.join(" OR "), values };
}

/** Column → value for the limit fields a patch names (absent fields stay absent; null resets to the default). */
function limitColumns(limits: Partial<LimitOverrides> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!limits) return out;
  for (const [field, column] of Object.entries(LIMIT_COLUMNS))
    out[column] = limits[field as keyof LimitOverrides];
  return out;
}

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}

function pgCode(error: unknown): string | undefined {
  return (error as { code?: string })?.code;
}

/** Map constraint violations to client errors; anything else propagates as an internal error. */
function mapKeyWriteError(error: unknown): never {
  if (pgCode(error) === "23503") {
    throw new InvalidRequestError("team_id does not name an existing team.", "unknown_team", "team_id");
  }
  throw error;
}

function mapTeamWriteError(error: unknown, name: string | undefined): never {
  if (pgCode(error) === "23505") {
    throw new ConflictError(`A team named "${name}" already exists.`, "team_exists");
  }
  throw error;
}

/** Key ids a team-delete conflict names; the rest are counted. */
const CONFLICT_IDS_SHOWN = 5;

/**
 * 409 for deleting a team that keys which are not revoked still reference: how many, how many of them expired,
 * which (the first few ids) and what to do.
 */
function teamHasKeys(keys: { n: number; expired: number; ids: string[] | null }): ConflictError {
  const { n, expired } = keys;
  const ids = keys.ids ?? [];
  const more = n > ids.length ? ` and ${n - ids.length} more` : "";
  return new ConflictError(
    `The team still has ${n} key${n === 1 ? " that is" : "s that are"} not revoked` +
      (expired
        ? ` (${expired} expired: a new expires_at would revive ${expired === 1 ? "it" : "them"})`
        : "") +
      `; revoke ${n === 1 ? "it" : "them"} first (POST /internal/keys/:id/revoke): ${ids.join(", ")}${more}.`,
    "team_has_active_keys",
  );
}

async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Record a change's audit event on its transaction's client, when the caller gave an audit context. */
async function audited(
  client: pg.PoolClient,
  audit: AuditContext | undefined,
  event: Omit<NewAuditEvent, keyof AuditContext>,
): Promise<void> {
  if (audit) await insertAuditEvent(client, { ...audit, ...event });
}

/** The key as it is before a change, locked until the transaction ends; null when there is none. */
async function lockedKey(client: pg.PoolClient, id: string): Promise<ApiKeyRecord | null> {
  const { rows } = await client.query(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE`, [id]);
  return rows.length ? toKey(rows[0] as Row) : null;
}

export function createPgKeyStore(pool: pg.Pool): KeyStore {
  return {
    async findByHash(hash) {
      const { rows } = await pool.query(
        `SELECT k.id, k.name, k.prefix, k.team_id, k.scopes, k.expires_at, k.revoked_at, k.created_at, k.rotated_from,
                k.rotation_root, k.requests_per_minute, k.tokens_per_minute, k.tokens_per_day, k.allowed_models,
                k.budget_usd_per_month,
                t.id AS t_id, t.requests_per_minute AS t_requests_per_minute,
                t.tokens_per_minute AS t_tokens_per_minute, t.tokens_per_day AS t_tokens_per_day,
                t.allowed_models AS t_allowed_models, t.budget_usd_per_month AS t_budget_usd_per_month
           FROM api_keys k LEFT JOIN teams t ON t.id = k.team_id
          WHERE k.key_hash = $1`,
        [hash],
      );
      if (!rows.length) return null;
      const row = rows[0] as Row;
      const lookup: KeyLookup = {
        key: toKey(row),
        teamLimits: row.t_id ? limitsFrom(row, "t_") : null,
        teamAllowedModels: (row.t_allowed_models as string[] | null) ?? null,
        teamBudgetUsdPerMonth: numberOrNull(row.t_budget_usd_per_month),
      };
      return lookup;
    },

    async create(input, audit) {
      return inTransaction(pool, async (client) => {
        const { rows } = await client
          .query(
            `INSERT INTO api_keys (name, key_hash, prefix, team_id, scopes, expires_at,
                                   requests_per_minute, tokens_per_minute, tokens_per_day, allowed_models,
                                   budget_usd_per_month)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING ${KEY_COLUMNS}`,
            [
              input.name,
              input.hash,
              input.prefix,
              input.teamId,
              input.scopes,
              input.expiresAt,
              input.limits.requestsPerMinute,
              input.limits.tokensPerMinute,
              input.limits.tokensPerDay,
              input.allowedModels ?? null,
              input.budgetUsdPerMonth ?? null,
            ],
          )
          .catch(mapKeyWriteError);
        const key = toKey(rows[0] as Row);
        await audited(client, audit, {
          action: "key.created",
          targetType: "api_key",
          targetId: key.id,
          changes: auditChanges(null, keySnapshot(key)),
        });
        return key;
      });
    },

    async list(opts = {}) {
      const params: unknown[] = [];
      const where: string[] = [];
      if (opts.after) {
        params.push(opts.after.at, opts.after.id);
        where.push(`(created_at, id) > ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
      }
      if (opts.teamId) {
        params.push(opts.teamId);
        where.push(`team_id = $${params.length}`);
      }
      const limit = opts.limit ?? null;
      // One row more than the page: whether there is a next page, without a count.
      if (limit !== null) params.push(limit + 1);
      const { rows } = await pool.query(
        `SELECT ${KEY_COLUMNS}, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at_exact
         FROM api_keys ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
         ORDER BY created_at, id ${limit !== null ? `LIMIT $${params.length}` : ""}`,
        params,
      );
      const page = limit !== null ? rows.slice(0, limit) : rows;
      const last = page.at(-1) as Row | undefined;
      return {
        keys: page.map((r) => toKey(r as Row)),
        next:
          limit !== null && rows.length > limit && last
            ? { at: String(last.at_exact), id: String(last.id) }
            : null,
      };
    },

    async get(id) {
      if (!isUuid(id)) return null;
      const { rows } = await pool.query(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = $1`, [id]);
      return rows.length ? toKey(rows[0] as Row) : null;
    },

    async update(id, patch, audit) {
      if (!isUuid(id)) return null;
      const update = updateSet(id, {
        name: patch.name,
        scopes: patch.scopes,
        expires_at: patch.expiresAt,
        allowed_models: patch.allowedModels,
        budget_usd_per_month: patch.budgetUsdPerMonth,
        ...limitColumns(patch.limits),
      });
      return inTransaction(pool, async (client) => {
        const before = await lockedKey(client, id);
        if (!before || !update) return before;
        const { rows } = await client.query(
          `UPDATE api_keys SET ${update.sets.join(", ")} WHERE id = $1 AND (${update.changed})
           RETURNING ${KEY_COLUMNS}`,
          update.values,
        );
        // Every field already had its value: nothing changed, so no new updated_at and no event (as a second revoke).
        if (!rows.length) return before;
        const key = toKey(rows[0] as Row);
        await audited(client, audit, {
          action: "key.updated",
          targetType: "api_key",
          targetId: id,
          changes: auditChanges(keySnapshot(before), keySnapshot(key)),
        });
        return key;
      });
    },

    async revoke(id, audit) {
      if (!isUuid(id)) return null;
      return inTransaction(pool, async (client) => {
        const before = await lockedKey(client, id);
        if (!before) return null;
        // Revoking twice keeps the first revocation time and changes nothing: no second event.
        if (before.revokedAt !== null) return before;
        const { rows } = await client.query(
          `UPDATE api_keys SET revoked_at = now(), updated_at = now() WHERE id = $1 RETURNING ${KEY_COLUMNS}`,
          [id],
        );
        const key = toKey(rows[0] as Row);
        await audited(client, audit, {
          action: "key.revoked",
          targetType: "api_key",
          targetId: id,
          changes: auditChanges(keySnapshot(before), keySnapshot(key)),
        });
        return key;
      });
    },

    async rotate(id, replacement, audit) {
      if (!isUuid(id)) return null;
      return inTransaction(pool, async (client) => {
        // FOR UPDATE serializes concurrent rotations of one key: the second sees it revoked and gets a conflict.
        const { rows } = await client.query(
          `SELECT ${KEY_COLUMNS}, (expires_at IS NOT NULL AND expires_at <= now()) AS expired
             FROM api_keys WHERE id = $1 FOR UPDATE`,
          [id],
        );
        if (!rows.length) return null;
        const old = rows[0] as Row;
        if (old.revoked_at !== null)
          throw new ConflictError("This key is revoked; it cannot be rotated.", "key_revoked");
        if (old.expired) {
          throw new ConflictError(
            "This key has expired; create a new key or extend expires_at first.",
            "key_expired",
          );
        }
        const revoked = await client.query(
          `UPDATE api_keys SET revoked_at = now(), updated_at = now() WHERE id = $1 RETURNING ${KEY_COLUMNS}`,
          [id],
        );
        const inserted = await client
          .query(
            `INSERT INTO api_keys (name, key_hash, prefix, team_id, scopes, expires_at, rotated_from, rotation_root,
                                   requests_per_minute, tokens_per_minute, tokens_per_day, allowed_models,
                                   budget_usd_per_month)
             SELECT name, $2, $3, team_id, scopes, expires_at, id, COALESCE(rotation_root, id), requests_per_minute,
                    tokens_per_minute, tokens_per_day, allowed_models, budget_usd_per_month
               FROM api_keys WHERE id = $1
             RETURNING ${KEY_COLUMNS}`,
            [id, replacement.hash, replacement.prefix],
          )
          .catch(mapKeyWriteError);
        const created = toKey(inserted.rows[0] as Row);
        // One event on the rotated key: its revocation and the replacement's id (which carries rotated_from).
        await audited(client, audit, {
          action: "key.rotated",
          targetType: "api_key",
          targetId: id,
          changes: {
            ...auditChanges(keySnapshot(toKey(old)), keySnapshot(toKey(revoked.rows[0] as Row))),
            replaced_by: { before: null, after: created.id },
          },
        });
        return created;
      });
    },
  };
}

export function createPgTeamStore(pool: pg.Pool): TeamStore {
  return {
    async create(input, audit) {
      return inTransaction(pool, async (client) => {
        const { rows } = await client
          .query(
            `INSERT INTO teams (name, requests_per_minute, tokens_per_minute, tokens_per_day, allowed_models,
                                budget_usd_per_month)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${TEAM_COLUMNS}`,
            [
              input.name,
              input.limits.requestsPerMinute,
              input.limits.tokensPerMinute,
              input.limits.tokensPerDay,
              input.allowedModels ?? null,
              input.budgetUsdPerMonth ?? null,
            ],
          )
          .catch((error: unknown) => mapTeamWriteError(error, input.name));
        const team = toTeam(rows[0] as Row);
        await audited(client, audit, {
          action: "team.created",
          targetType: "team",
          targetId: team.id,
          changes: auditChanges(null, teamSnapshot(team)),
        });
        return team;
      });
    },

    async list() {
      const { rows } = await pool.query(`SELECT ${TEAM_COLUMNS} FROM teams ORDER BY created_at, id`);
      return rows.map((r) => toTeam(r as Row));
    },

    async get(id) {
      if (!isUuid(id)) return null;
      const { rows } = await pool.query(`SELECT ${TEAM_COLUMNS} FROM teams WHERE id = $1`, [id]);
      return rows.length ? toTeam(rows[0] as Row) : null;
    },

    async update(id, patch, audit) {
      if (!isUuid(id)) return null;
      const update = updateSet(id, {
        name: patch.name,
        allowed_models: patch.allowedModels,
        budget_usd_per_month: patch.budgetUsdPerMonth,
        ...limitColumns(patch.limits),
      });
      return inTransaction(pool, async (client) => {
        const locked = await client.query(`SELECT ${TEAM_COLUMNS} FROM teams WHERE id = $1 FOR UPDATE`, [id]);
        if (!locked.rows.length) return null;
        const before = toTeam(locked.rows[0] as Row);
        if (!update) return before;
        const { rows } = await client
          .query(
            `UPDATE teams SET ${update.sets.join(", ")} WHERE id = $1 AND (${update.changed})
             RETURNING ${TEAM_COLUMNS}`,
            update.values,
          )
          .catch((error: unknown) => mapTeamWriteError(error, patch.name));
        // Every field already had its value: nothing changed, so no new updated_at and no event (as a second revoke).
        if (!rows.length) return before;
        const team = toTeam(rows[0] as Row);
        await audited(client, audit, {
          action: "team.updated",
          targetType: "team",
          targetId: id,
          changes: auditChanges(teamSnapshot(before), teamSnapshot(team)),
        });
        return team;
      });
    },

    async delete(id, audit) {
      if (!isUuid(id)) return false;
      return inTransaction(pool, async (client) => {
        // FOR UPDATE conflicts with the FOR KEY SHARE lock that a concurrent key insert takes on the team row, so
        // no key can be added between the check and the delete.
        const team = await client.query(`SELECT ${TEAM_COLUMNS} FROM teams WHERE id = $1 FOR UPDATE`, [id]);
        if (!team.rows.length) return false;
        // Expired keys count too: a new expires_at revives a key, and once the team is gone (team_id is set to
        // null) it would work again without the team's limits, models and budget. Only revocation is final.
        const live = await client.query<{ n: number; expired: number; ids: string[] | null }>(
          `SELECT count(*)::int AS n,
                  count(*) FILTER (WHERE expires_at IS NOT NULL AND expires_at <= now())::int AS expired,
                  (array_agg(id::text ORDER BY created_at, id))[1:${CONFLICT_IDS_SHOWN}] AS ids
             FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL`,
          [id],
        );
        if (live.rows[0].n > 0) throw teamHasKeys(live.rows[0]);
        await client.query("DELETE FROM teams WHERE id = $1", [id]);
        await audited(client, audit, {
          action: "team.deleted",
          targetType: "team",
          targetId: id,
          changes: auditChanges(teamSnapshot(toTeam(team.rows[0] as Row)), null),
        });
        return true;
      });
    },
  };
}

/** SQL for each grouping; fixed strings, never built from input. */
const GROUP_EXPRESSIONS = {
  key: "key_id::text",
  team: "team_id::text",
  // The model that actually answered (after fallbacks); the requested name when nothing was served.
  model: "COALESCE(served_model, requested_model)",
  day: "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
  // ISO weeks (Monday to Sunday, UTC), named by their Monday.
  week: "to_char(date_trunc('week', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
  month: "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM')",
  // The client API (chat, messages, responses, embeddings) and the provider that answered.
  route: "route",
  provider: "provider",
} as const satisfies Record<UsageQuery["groupBy"], string>;

/** Filter columns; the values are always bound parameters. */
const FILTER_EXPRESSIONS = {
  keyId: "key_id = $%::uuid",
  teamId: "team_id = $%::uuid",
  model: "COALESCE(served_model, requested_model) = $%",
  route: "route = $%",
  provider: "provider = $%",
} as const satisfies Record<keyof NonNullable<UsageQuery["filter"]>, string>;

const ORDER_EXPRESSIONS = {
  group: "1 NULLS LAST",
  requests: "requests DESC, 1 NULLS LAST",
  total_tokens: "sum(prompt_tokens) + sum(completion_tokens) DESC, 1 NULLS LAST",
  cost_usd: "sum(cost_usd) DESC NULLS LAST, 1 NULLS LAST",
  errors: "errors DESC, 1 NULLS LAST",
} as const satisfies Record<NonNullable<UsageQuery["orderBy"]>, string>;

export function createPgUsageReport(pool: pg.Pool): UsageReport {
  return {
    async aggregate(q) {
      const group = GROUP_EXPRESSIONS[q.groupBy];
      if (!group)
        throw new InvalidRequestError(`Unknown group_by "${q.groupBy}".`, "invalid_group_by", "group_by");
      const order = ORDER_EXPRESSIONS[q.orderBy ?? "group"];
      if (!order)
        throw new InvalidRequestError(`Unknown order_by "${q.orderBy}".`, "invalid_value", "order_by");
      const params: unknown[] = [q.from, q.to];
      const where = ["created_at >= $1", "created_at < $2"];
      for (const [field, value] of Object.entries(q.filter ?? {})) {
        if (value === undefined) continue;
        const sql = FILTER_EXPRESSIONS[field as keyof typeof FILTER_EXPRESSIONS];
        if (!sql) throw new InvalidRequestError(`Unknown usage filter "${field}".`, "invalid_value", field);
        params.push(value);
        where.push(sql.replace("$%", `$${params.length}`));
      }
      let limit = "";
      if (q.limit !== undefined) {
        params.push(q.limit);
        limit = `LIMIT $${params.length}`;
      }
      const { rows } = await pool.query(
        `SELECT ${group} AS grp,
                count(*) AS requests,
                COALESCE(sum(prompt_tokens), 0) AS prompt_tokens,
                COALESCE(sum(completion_tokens), 0) AS completion_tokens,
                COALESCE(sum(cached_tokens), 0) AS cached_tokens,
                COALESCE(sum(cache_write_tokens), 0) AS cache_write_tokens,
                sum(cost_usd) AS cost_usd,
                count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_requests,
                count(*) FILTER (WHERE status >= 400) AS errors,
                count(*) FILTER (WHERE cache_hit) AS cache_hits
           FROM usage
          WHERE ${where.join(" AND ")}
          GROUP BY 1
          ORDER BY ${order}
          ${limit}`,
        params,
      );
      // Names of the keys or teams in the report, in one query (ids only: the names may have changed since).
      const table = q.groupBy === "key" ? "api_keys" : q.groupBy === "team" ? "teams" : null;
      const names = new Map<string, string>();
      const ids = rows.map((r: Row) => r.grp).filter((g: unknown): g is string => typeof g === "string");
      if (table && ids.length) {
        const found = await pool.query(
          `SELECT id::text AS id, name FROM ${table} WHERE id = ANY($1::uuid[])`,
          [ids],
        );
        for (const r of found.rows as Row[]) names.set(String(r.id), String(r.name));
      }
      return rows.map((r: Row): UsageReportRow => ({
        group: r.grp === null ? null : String(r.grp),
        ...(table ? { name: r.grp === null ? null : (names.get(String(r.grp)) ?? null) } : {}),
        requests: Number(r.requests),
        promptTokens: Number(r.prompt_tokens),
        completionTokens: Number(r.completion_tokens),
        cachedTokens: Number(r.cached_tokens),
        cacheWriteTokens: Number(r.cache_write_tokens),
        costUsd: r.cost_usd === null ? null : Number(r.cost_usd),
        unpricedRequests: Number(r.unpriced_requests),
        errors: Number(r.errors),
        cacheHits: Number(r.cache_hits),
      }));
    },
  };
}
