/**
 * Admin API under /internal (master key only, on every route). JSON in and out, snake_case.
 *
 *   POST   /internal/teams                 {name, allowed_models?, ...limits}  → 201
 *   GET    /internal/teams                 → {object: "list", data: [team]}
 *   GET    /internal/teams/:id
 *   PATCH  /internal/teams/:id             {name?, allowed_models?, ...limits}
 *   DELETE /internal/teams/:id             → {id, object: "team", deleted: true}; 409 while a key that is not
 *                                           revoked (expired ones included) belongs to it
 *   POST   /internal/keys                  {name, team_id?, scopes?, expires_at?, allowed_models?, ...limits}  → 201
 *   GET    /internal/keys?limit&cursor&team_id → {object: "list", data: [key], next_cursor}  (never the key or its hash)
 *   GET    /internal/keys/:id
 *   PATCH  /internal/keys/:id              {name?, scopes?, expires_at?, allowed_models?, ...limits}
 *   POST   /internal/keys/:id/revoke
 *   POST   /internal/keys/:id/rotate       → 201 the replacement with its `key`; the old key is revoked
 *   GET    /internal/audit?from&to&action&target_id&limit&cursor  → {object: "list", data: [event], next_cursor}
 *   GET    /internal/usage?from&to&group_by=key|team|model|day|week|month|route|provider
 *          &key_id&team_id&model&route&provider&order_by=group|requests|total_tokens|cost_usd|errors&limit
 *
 * Limits (`requests_per_minute`, `tokens_per_minute`, `tokens_per_day`): absent or null = the configured default
 * (on PATCH: absent = unchanged, null = back to the default), 0 = blocked, a positive integer = that budget.
 * `allowed_models`: the client-facing model names a key (or a team's keys) may use; absent or null = every model.
 * The plaintext key is returned once, by create and rotate; only its SHA-256 hash is stored.
 * GET endpoints take only the query parameters listed above (the others none): any other is a 400
 * `unknown_parameter` naming it, as an unknown body field is a 400 `unknown_field`.
 * Every successful change records one audit event in its own transaction (see ports.ts, TeamStore); a rejected
 * request records none, and neither does a PATCH whose fields all equal the stored values (it answers the record
 * unchanged, like a second revoke). Events are listed newest first, a page at a time (`next_cursor`, null on the
 * last page).
 */
import Router from "@koa/router";
import type { Context, Middleware } from "koa";
import { z } from "zod";
import type { AppDeps } from "../app";
import { KEY_SCOPES } from "../config";
import { InvalidRequestError, NotFoundError } from "../errors";
import { readJsonBody } from "../lib/body";
import { AUDIT_ACTIONS, auditContextOf, isAuditAction } from "../lib/audit";
import { generateApiKey } from "../lib/keys";
import type { ApiKeyRecord, AuditEvent, AuditPosition, LimitOverrides, Team, UsageReportRow } from "../ports";
import { USAGE_GROUPS, USAGE_ORDERS } from "../ports";
import type { ProxyState } from "../state";
import type { SpendScope } from "../adapters/spend";

/** Admin bodies are small; this bound is independent of the (larger) proxy body limit. */
export const ADMIN_BODY_LIMIT_BYTES = 64 * 1024;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RAG_COLLECTION_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}$/;
const SCOPE_HELP = `${KEY_SCOPES.join(", ")}, rag:* or rag:<collection>`;

export function isValidScope(scope: string): boolean {
  if ((KEY_SCOPES as readonly string[]).includes(scope)) return true;
  if (!scope.startsWith("rag:")) return false;
  const collection = scope.slice("rag:".length);
  return collection === "*" || RAG_COLLECTION_RE.test(collection);
}

const INT4_MAX = 2_147_483_647;
const limit = (max: number) =>
  z
    .number({ error: "must be a whole number, 0 (blocked) or null (the default)" })
    .int("must be a whole number")
    .min(0, "must be 0 (blocked) or positive; null means the default")
    .max(max, `must be at most ${max}`)
    .nullable()
    .optional();
const limitFields = {
  requests_per_minute: limit(INT4_MAX),
  tokens_per_minute: limit(Number.MAX_SAFE_INTEGER),
  tokens_per_day: limit(Number.MAX_SAFE_INTEGER),
};

// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
/** With the `u` flag a surrogate pair is one code point, so this matches only an unpaired (lone) surrogate. */
const LONE_SURROGATE_RE = /\p{Cs}/u;

/**
 * Text stored in PostgreSQL as given: no control characters (its text type refuses NUL, and a name with a line break
 * or an escape sequence garbles lists and logs) and no unpaired UTF-16 surrogate (not Unicode: it would be stored as
 * U+FFFD, not as sent).
 */
function isPrintableText(text: string): boolean {
  return !CONTROL_RE.test(text) && !LONE_SURROGATE_RE.test(text);
}
const PRINTABLE_TEXT =
  "must be printable text, without control characters (such as NUL) or unpaired surrogates";

const name = z
  .string({ error: "must be a string" })
  .trim()
  .min(1, "must not be empty")
  .max(200, "at most 200 characters")
  .refine(isPrintableText, PRINTABLE_TEXT);
const scopes = z
  .array(z.string().refine(isValidScope, `must be one of ${SCOPE_HELP}`), {
    error: "must be an array of scopes",
  })
  .min(1, "must list at least one scope")
  .max(64, "at most 64 scopes")
  .transform((list) => [...new Set(list)]);
/**
 * The latest instant a date-time may name. PostgreSQL's timestamptz reaches further, but a later instant's ISO form
 * has a six-digit year (+010000-…), which it does not parse.
 */
const MAX_TIMESTAMP = "9999-12-31T23:59:59Z";
const MAX_TIMESTAMP_MS = Date.parse(MAX_TIMESTAMP);
const futureDate = z.iso
  .datetime({ offset: true, error: "must be an ISO 8601 date-time, e.g. 2030-01-01T00:00:00Z" })
  .refine((v) => Date.parse(v) > Date.now(), "must be in the future")
  .refine((v) => Date.parse(v) <= MAX_TIMESTAMP_MS, `must be at most ${MAX_TIMESTAMP} (in UTC)`)
  .transform((v) => new Date(v).toISOString());

/** Client-facing model names (not checked against the config, which may change); null = every model. */
const allowedModels = z
  .array(
    z
      .string({ error: "must be a string" })
      .trim()
      .min(1, "must not be empty")
      .max(200, "at most 200 characters")
      .refine(isPrintableText, PRINTABLE_TEXT),
    {
      error: "must be an array of model names, or null for every model",
    },
  )
  .max(1000, "at most 1000 models")
  .transform((list) => [...new Set(list)])
  .nullable()
  .optional();

/** USD per UTC calendar month; null = no budget, 0 = blocked. */
const budget = z
  .number({ error: "must be a number of US dollars, 0 (blocked) or null (no budget)" })
  .min(0, "must be 0 (blocked) or positive; null means no budget")
  .max(1_000_000_000, "must be at most 1000000000")
  .nullable()
  .optional();

const teamCreateSchema = z
  .object({ name, allowed_models: allowedModels, budget_usd_per_month: budget, ...limitFields })
  .strict();
const teamPatchSchema = z
  .object({
    name: name.optional(),
    allowed_models: allowedModels,
    budget_usd_per_month: budget,
    ...limitFields,
  })
  .strict();
const keyCreateSchema = z
  .object({
    name,
    team_id: z.string().regex(UUID_RE, "must be a UUID").nullable().optional(),
    scopes: scopes.optional(),
    expires_at: futureDate.nullable().optional(),
    allowed_models: allowedModels,
    budget_usd_per_month: budget,
    ...limitFields,
  })
  .strict();
const keyPatchSchema = z
  .object({
    name: name.optional(),
    scopes: scopes.optional(),
    expires_at: futureDate.nullable().optional(),
    allowed_models: allowedModels,
    budget_usd_per_month: budget,
    ...limitFields,
  })
  .strict();

/** Scopes a key gets when none are given: the proxy APIs, not knowledge-base writes. */
export const DEFAULT_KEY_SCOPES = ["chat", "embeddings", "models"];

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new InvalidRequestError("The request body must be a JSON object.", "invalid_body");
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (issue.code === "unrecognized_keys") {
    const field = issue.keys[0];
    throw new InvalidRequestError(`Unknown field \`${field}\`.`, "unknown_field", field);
  }
  const field = issue.path.map(String).join(".");
  throw new InvalidRequestError(
    field ? `Invalid \`${field}\`: ${issue.message}.` : `Invalid request body: ${issue.message}.`,
    "invalid_value",
    field || null,
  );
}

/** Present fields only: absent stays undefined (unchanged on PATCH), null is kept (the default). */
function limitsFrom(input: {
  requests_per_minute?: number | null;
  tokens_per_minute?: number | null;
  tokens_per_day?: number | null;
}): Partial<LimitOverrides> {
  const out: Partial<LimitOverrides> = {};
  if (input.requests_per_minute !== undefined) out.requestsPerMinute = input.requests_per_minute;
  if (input.tokens_per_minute !== undefined) out.tokensPerMinute = input.tokens_per_minute;
  if (input.tokens_per_day !== undefined) out.tokensPerDay = input.tokens_per_day;
  return out;
}

function fullLimits(partial: Partial<LimitOverrides>): LimitOverrides {
  return {
    requestsPerMinute: partial.requestsPerMinute ?? null,
    tokensPerMinute: partial.tokensPerMinute ?? null,
    tokensPerDay: partial.tokensPerDay ?? null,
  };
}

function idParam(ctx: { params: Record<string, string> }): string {
  const id = ctx.params.id;
  if (!UUID_RE.test(id)) throw new InvalidRequestError("`id` must be a UUID.", "invalid_id", "id");
  return id.toLowerCase();
}

export function teamJson(t: Team) {
  return {
    id: t.id,
    object: "team" as const,
    name: t.name,
    requests_per_minute: t.limits.requestsPerMinute,
    tokens_per_minute: t.limits.tokensPerMinute,
    tokens_per_day: t.limits.tokensPerDay,
    allowed_models: t.allowedModels,
    budget_usd_per_month: t.budgetUsdPerMonth,
    created_at: t.createdAt,
    updated_at: t.updatedAt,
  };
}

export function keyJson(k: ApiKeyRecord) {
  const expired = k.expiresAt !== null && Date.parse(k.expiresAt) <= Date.now();
  return {
    id: k.id,
    object: "api_key" as const,
    name: k.name,
    prefix: k.prefix,
    team_id: k.teamId,
    scopes: k.scopes,
    status: k.revokedAt ? ("revoked" as const) : expired ? ("expired" as const) : ("active" as const),
    expires_at: k.expiresAt,
    revoked_at: k.revokedAt,
    rotated_from: k.rotatedFrom,
    created_at: k.createdAt,
    requests_per_minute: k.limits.requestsPerMinute,
    tokens_per_minute: k.limits.tokensPerMinute,
    tokens_per_day: k.limits.tokensPerDay,
    allowed_models: k.allowedModels,
    budget_usd_per_month: k.budgetUsdPerMonth,
  };
}

/** USD to a millionth of a dollar (sums of decimal prices carry float noise). */
const roundUsd = (usd: number) => Math.round(usd * 1e6) / 1e6;

function usageJson(r: UsageReportRow) {
  return {
    group: r.group,
    ...(r.name !== undefined ? { name: r.name } : {}),
    requests: r.requests,
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
    cached_tokens: r.cachedTokens,
    cache_write_tokens: r.cacheWriteTokens,
    cost_usd: r.costUsd === null ? null : roundUsd(r.costUsd),
    unpriced_requests: r.unpricedRequests,
    errors: r.errors,
    cache_hits: r.cacheHits,
  };
}

/** The query parameters each GET endpoint takes (README.md, Admin API); the others take none. */
const AUDIT_QUERY = ["from", "to", "action", "target_id", "limit", "cursor"] as const;
const USAGE_QUERY = [
  "from",
  "to",
  "group_by",
  "key_id",
  "team_id",
  "model",
  "route",
  "provider",
  "order_by",
  "limit",
] as const;

/**
 * Rejects a query parameter the endpoint does not take, as bodies reject an unknown field: a misspelled filter
 * (`grup_by`, `acton`) would otherwise be ignored and answer an unfiltered 200 that looks like a filtered one.
 */
export function acceptQuery(...accepted: string[]): Middleware<ProxyState> {
  const help = accepted.length
    ? `this endpoint accepts ${accepted.map((p) => `\`${p}\``).join(", ")}`
    : "this endpoint takes no query parameters";
  return async function knownQueryOnly(ctx, next) {
    const unknown = Object.keys(ctx.query).find((field) => !accepted.includes(field));
    if (unknown !== undefined) {
      throw new InvalidRequestError(
        `Unknown query parameter \`${unknown}\`: ${help}.`,
        "unknown_parameter",
        unknown,
      );
    }
    await next();
  };
}

function queryString(ctx: Context, field: string): string | undefined {
  const v = ctx.query[field];
  if (v === undefined) return undefined;
  if (typeof v !== "string")
    throw new InvalidRequestError(`Query parameter \`${field}\` must be given once.`, "invalid_value", field);
  return v;
}

function oneOf<T extends string>(ctx: Context, field: string, allowed: readonly T[]): T | undefined {
  const v = queryString(ctx, field);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) {
    throw new InvalidRequestError(
      `Invalid \`${field}\`: expected one of ${allowed.join(", ")}.`,
      "invalid_value",
      field,
    );
  }
  return v as T;
}

/** A name to match (model, route, provider): printable text, as PostgreSQL's text type takes no NUL. */
function queryName(ctx: Context, field: string): string | undefined {
  const v = queryString(ctx, field);
  if (v !== undefined && (!isPrintableText(v) || v.length > 200)) {
    throw new InvalidRequestError(
      `Invalid \`${field}\`: expected a name of at most 200 printable characters.`,
      "invalid_value",
      field,
    );
  }
  return v;
}

function queryUuid(ctx: Context, field: string): string | undefined {
  const v = queryString(ctx, field);
  if (v !== undefined && !UUID_RE.test(v)) {
    throw new InvalidRequestError(`Invalid \`${field}\`: expected an id (a UUID).`, "invalid_value", field);
  }
  return v;
}

function queryDate(ctx: Context, field: string): Date | undefined {
  const v = queryString(ctx, field);
  if (v === undefined) return undefined;
  const ok = z.iso.datetime({ offset: true }).safeParse(v).success || z.iso.date().safeParse(v).success;
  if (!ok) {
    throw new InvalidRequestError(
      `Invalid \`${field}\`: expected an ISO 8601 date (2030-01-31, UTC) or date-time with zone.`,
      "invalid_value",
      field,
    );
  }
  return new Date(v);
}

/** `limit`: a whole number in [1, max]; absent → `fallback`. */
function queryLimit(ctx: Context, field: string, fallback: number, max: number): number {
  const v = queryString(ctx, field);
  if (v === undefined) return fallback;
  const n = /^\d{1,7}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= max)) {
    throw new InvalidRequestError(
      `Invalid \`${field}\`: expected a whole number from 1 to ${max}.`,
      "invalid_value",
      field,
    );
  }
  return n;
}

export const KEYS_PAGE_DEFAULT = 1000;
export const KEYS_PAGE_MAX = 1000;
const KEYS_QUERY = ["limit", "cursor", "team_id"] as const;

export const AUDIT_PAGE_DEFAULT = 100;
export const AUDIT_PAGE_MAX = 1000;
const CURSOR_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)\|([0-9a-f-]{36})$/;

/** Opaque to clients: the last event's exact time and id. */
function encodeCursor(p: AuditPosition): string {
  return Buffer.from(`${p.at}|${p.id}`, "utf8").toString("base64url");
}

/**
 * A cursor's time names a real instant PostgreSQL accepts: Date.parse rolls impossible fields over (February 30th is
 * March 2nd, hour 24 the next day), so the parsed date must print back as written; year 0 is not a year to it.
 */
function isRealInstant(at: string): boolean {
  const ms = Date.parse(at);
  return (
    Number.isFinite(ms) &&
    !at.startsWith("0000") &&
    new Date(ms).toISOString().slice(0, 19) === at.slice(0, 19)
  );
}

function queryCursor(ctx: Context): AuditPosition | undefined {
  const v = queryString(ctx, "cursor");
  if (v === undefined) return undefined;
  const m = CURSOR_RE.exec(Buffer.from(v, "base64url").toString("utf8"));
  if (!m || !UUID_RE.test(m[2]) || !isRealInstant(m[1])) {
    throw new InvalidRequestError(
      "Invalid `cursor`: pass the `next_cursor` of a previous page unchanged.",
      "invalid_value",
      "cursor",
    );
  }
  return { at: m[1], id: m[2] };
}

export function auditJson(e: AuditEvent) {
  return {
    id: e.id,
    object: "audit_event" as const,
    at: e.at,
    actor: e.actor,
    action: e.action,
    target_type: e.targetType,
    target_id: e.targetId,
    request_id: e.requestId,
    client_ip: e.clientIp,
    changes: e.changes,
  };
}

export function createAdminRouter(deps: AppDeps, masterAuth: Middleware<ProxyState>): Router<ProxyState> {
  const router = new Router<ProxyState>();
  const body = (ctx: Context) => readJsonBody(ctx, ADMIN_BODY_LIMIT_BYTES);
  const forget = (id: string) => deps.onKeyRevoked?.(id);
  const noQuery = acceptQuery();

  // ------------------------------------------------------------------ teams

  router.post("/internal/teams", masterAuth, async function createTeam(ctx) {
    const input = parseBody(teamCreateSchema, await body(ctx));
    const team = await deps.teams.create(
      {
        name: input.name,
        limits: fullLimits(limitsFrom(input)),
        allowedModels: input.allowed_models ?? null,
        budgetUsdPerMonth: input.budget_usd_per_month ?? null,
      },
      auditContextOf(ctx),
    );
    ctx.status = 201;
    ctx.body = teamJson(team);
  });

  /** Objects with `spent_usd_this_month` added (when budgets are tracked: deps.spend). */
  async function withSpend<T extends { id: string }>(
    scope: SpendScope,
    items: T[],
  ): Promise<Array<T & { spent_usd_this_month?: number }>> {
    if (!deps.spend) return items;
    const spent = await deps.spend.monthToDate(
      scope,
      items.map((i) => i.id),
    );
    return items.map((i) => ({ ...i, spent_usd_this_month: roundUsd(spent.get(i.id) ?? 0) }));
  }

  router.get("/internal/teams", masterAuth, noQuery, async function listTeams(ctx) {
    ctx.body = { object: "list", data: await withSpend("team", (await deps.teams.list()).map(teamJson)) };
  });

  router.get("/internal/teams/:id", masterAuth, noQuery, async function getTeam(ctx) {
    const team = await deps.teams.get(idParam(ctx));
    if (!team) throw new NotFoundError("No team with this id.", "team_not_found", "id");
    ctx.body = (await withSpend("team", [teamJson(team)]))[0];
  });

  router.patch("/internal/teams/:id", masterAuth, async function updateTeam(ctx) {
    const id = idParam(ctx);
    const input = parseBody(teamPatchSchema, await body(ctx));
    const team = await deps.teams.update(
      id,
      {
        ...(input.name !== undefined ? { name: input.name } : {}),
        ...(input.allowed_models !== undefined ? { allowedModels: input.allowed_models } : {}),
        ...(input.budget_usd_per_month !== undefined
          ? { budgetUsdPerMonth: input.budget_usd_per_month }
          : {}),
        limits: limitsFrom(input),
      },
      auditContextOf(ctx),
    );
    if (!team) throw new NotFoundError("No team with this id.", "team_not_found", "id");
    // Its keys' cached lookups carry the team's old limits and models: drop them so the change applies at once.
    deps.onTeamChanged?.(id);
    ctx.body = teamJson(team);
  });

  router.delete("/internal/teams/:id", masterAuth, async function deleteTeam(ctx) {
    const id = idParam(ctx);
    if (!(await deps.teams.delete(id, auditContextOf(ctx))))
      throw new NotFoundError("No team with this id.", "team_not_found", "id");
    deps.onTeamChanged?.(id);
    ctx.body = { id, object: "team", deleted: true };
  });

  // ------------------------------------------------------------------ keys

  router.post("/internal/keys", masterAuth, async function createKey(ctx) {
    const input = parseBody(keyCreateSchema, await body(ctx));
    const generated = generateApiKey();
    const record = await deps.keys.create(
      {
        name: input.name,
        teamId: input.team_id ? input.team_id.toLowerCase() : null,
        scopes: input.scopes ?? DEFAULT_KEY_SCOPES,
        expiresAt: input.expires_at ?? null,
        limits: fullLimits(limitsFrom(input)),
        allowedModels: input.allowed_models ?? null,
        budgetUsdPerMonth: input.budget_usd_per_month ?? null,
        hash: generated.hash,
        prefix: generated.prefix,
      },
      auditContextOf(ctx),
    );
    ctx.status = 201;
    // The only response that ever carries the key.
    ctx.body = { ...keyJson(record), key: generated.key };
  });

  // A page at a time (50,000 keys were one 22 MB answer that blocked the worker for seconds): oldest first.
  router.get("/internal/keys", masterAuth, acceptQuery(...KEYS_QUERY), async function listKeys(ctx) {
    const teamId = queryString(ctx, "team_id");
    if (teamId !== undefined && !UUID_RE.test(teamId))
      throw new InvalidRequestError(
        "Invalid `team_id`: expected a team's id (a UUID).",
        "invalid_id",
        "team_id",
      );
    const page = await deps.keys.list({
      limit: queryLimit(ctx, "limit", KEYS_PAGE_DEFAULT, KEYS_PAGE_MAX),
      after: queryCursor(ctx),
      ...(teamId ? { teamId: teamId.toLowerCase() } : {}),
    });
    ctx.body = {
      object: "list",
      data: await withSpend("key", page.keys.map(keyJson)),
      next_cursor: page.next ? encodeCursor(page.next) : null,
    };
  });

  router.get("/internal/keys/:id", masterAuth, noQuery, async function getKey(ctx) {
    const key = await deps.keys.get(idParam(ctx));
    if (!key) throw new NotFoundError("No API key with this id.", "key_not_found", "id");
    ctx.body = (await withSpend("key", [keyJson(key)]))[0];
  });

  router.patch("/internal/keys/:id", masterAuth, async function updateKey(ctx) {
    const id = idParam(ctx);
    const input = parseBody(keyPatchSchema, await body(ctx));
    const key = await deps.keys.update(
      id,
      {
        ...(input.name !== undefined ? { name: input.name } : {}),
        ...(input.scopes !== undefined ? { scopes: input.scopes } : {}),
        ...(input.expires_at !== undefined ? { expiresAt: input.expires_at } : {}),
        ...(input.allowed_models !== undefined ? { allowedModels: input.allowed_models } : {}),
        ...(input.budget_usd_per_month !== undefined
          ? { budgetUsdPerMonth: input.budget_usd_per_month }
          : {}),
        limits: limitsFrom(input),
      },
      auditContextOf(ctx),
    );
    if (!key) throw new NotFoundError("No API key with this id.", "key_not_found", "id");
    // Scopes, expiry, limits and models are cached with the key by auth: drop the cached copy so they apply at once.
    forget(id);
    ctx.body = keyJson(key);
  });

  router.post("/internal/keys/:id/revoke", masterAuth, async function revokeKey(ctx) {
    const id = idParam(ctx);
    const key = await deps.keys.revoke(id, auditContextOf(ctx));
    if (!key) throw new NotFoundError("No API key with this id.", "key_not_found", "id");
    forget(id);
    ctx.body = keyJson(key);
  });

  router.post("/internal/keys/:id/rotate", masterAuth, async function rotateKey(ctx) {
    const id = idParam(ctx);
    const generated = generateApiKey();
    const replacement = await deps.keys.rotate(
      id,
      { hash: generated.hash, prefix: generated.prefix },
      auditContextOf(ctx),
    );
    if (!replacement) throw new NotFoundError("No API key with this id.", "key_not_found", "id");
    forget(id);
    ctx.status = 201;
    ctx.body = { ...keyJson(replacement), key: generated.key };
  });

  // ------------------------------------------------------------------ audit

  router.get("/internal/audit", masterAuth, acceptQuery(...AUDIT_QUERY), async function listAudit(ctx) {
    const from = queryDate(ctx, "from");
    const to = queryDate(ctx, "to");
    if (from && to && from.getTime() >= to.getTime()) {
      throw new InvalidRequestError("`from` must be before `to`.", "invalid_value", "from");
    }
    const action = queryString(ctx, "action");
    if (action !== undefined && !isAuditAction(action)) {
      throw new InvalidRequestError(
        `Invalid \`action\`: expected one of ${AUDIT_ACTIONS.join(", ")}.`,
        "invalid_value",
        "action",
      );
    }
    const targetId = queryString(ctx, "target_id");
    if (
      targetId !== undefined &&
      (targetId.length < 1 || targetId.length > 1024 || !isPrintableText(targetId))
    ) {
      throw new InvalidRequestError(
        "Invalid `target_id`: expected 1 to 1024 printable characters (no control characters such as NUL).",
        "invalid_value",
        "target_id",
      );
    }
    const limit = queryLimit(ctx, "limit", AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX);
    const after = queryCursor(ctx);
    const page = await deps.audit.list({ from, to, action, targetId, limit, after });
    ctx.body = {
      object: "list",
      data: page.events.map(auditJson),
      next_cursor: page.next ? encodeCursor(page.next) : null,
    };
  });

  // ------------------------------------------------------------------ usage

  router.get("/internal/usage", masterAuth, acceptQuery(...USAGE_QUERY), async function usageReport(ctx) {
    const groupBy = oneOf(ctx, "group_by", USAGE_GROUPS) ?? "key";
    const orderBy = oneOf(ctx, "order_by", USAGE_ORDERS) ?? "group";
    const to = queryDate(ctx, "to") ?? new Date();
    const from = queryDate(ctx, "from") ?? new Date(to.getTime() - 24 * 3600_000);
    if (from.getTime() >= to.getTime()) {
      throw new InvalidRequestError("`from` must be before `to`.", "invalid_value", "from");
    }
    const limitText = queryString(ctx, "limit");
    const limit = limitText === undefined ? undefined : Number(limitText);
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= 10_000)) {
      throw new InvalidRequestError(
        "Invalid `limit`: expected an integer from 1 to 10000.",
        "invalid_value",
        "limit",
      );
    }
    const filter = {
      keyId: queryUuid(ctx, "key_id"),
      teamId: queryUuid(ctx, "team_id"),
      model: queryName(ctx, "model"),
      route: queryName(ctx, "route"),
      provider: queryName(ctx, "provider"),
    };
    const rows = await deps.usageReport.aggregate({
      from,
      to,
      groupBy,
      orderBy,
      filter,
      ...(limit !== undefined ? { limit } : {}),
    });
    ctx.body = {
      object: "list",
      from: from.toISOString(),
      to: to.toISOString(),
      group_by: groupBy,
      order_by: orderBy,
      filter: Object.fromEntries(
        Object.entries({
          key_id: filter.keyId,
          team_id: filter.teamId,
          model: filter.model,
          route: filter.route,
          provider: filter.provider,
        }).filter(([, v]) => v !== undefined),
      ),
      data: rows.map(usageJson),
    };
  });

  return router;
}
