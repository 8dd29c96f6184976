/**
 * Ports: the small interfaces through which stages and routes use the outside world. Adapters (service/adapters/)
 * implement them over pg, ioredis, chromadb and undici; stages receive them through factory arguments.
 */
import type { Budget } from "./config";
import type { CancelSignal } from "./lib/cancel";
import type { ChatCompletion, ChatCompletionChunk, EmbeddingResponse } from "./types";

// ---------------------------------------------------------------- keys, teams, usage (PostgreSQL)

/** Per-key or per-team limit overrides: null = the configured default, 0 = blocked. */
export type LimitOverrides = Budget;

export interface Team {
  id: string;
  name: string;
  limits: LimitOverrides;
  /** Client-facing model names the team's keys may use; null = every model. */
  allowedModels: string[] | null;
  /** USD the team's keys may spend per UTC calendar month; null = no budget, 0 = blocked. */
  budgetUsdPerMonth: number | null;
  createdAt: string;
  updatedAt: string;
}

export interface ApiKeyRecord {
  id: string;
  name: string;
  /** Short display prefix, e.g. `sk-llmp-AbCd`. */
  prefix: string;
  teamId: string | null;
  scopes: string[];
  expiresAt: string | null;
  revokedAt: string | null;
  createdAt: string;
  rotatedFrom: string | null;
  /**
   * The first key of its rotation chain; null when it replaced none. Its rate-limit windows are the chain's: a
   * rotation changes the secret, not the budget already used this minute or day.
   */
  rotationRoot: string | null;
  limits: LimitOverrides;
  /** Client-facing model names this key may use (within its team's list); null = every model. */
  allowedModels: string[] | null;
  /** USD this key may spend per UTC calendar month (within its team's); null = no budget, 0 = blocked. */
  budgetUsdPerMonth: number | null;
}

/** What auth needs per request: the key and its team's overrides in one lookup. */
export interface KeyLookup {
  key: ApiKeyRecord;
  teamLimits: LimitOverrides | null;
  /** The team's model list (null: no team, or the team allows every model). */
  teamAllowedModels: string[] | null;
  /** The team's monthly budget (null: no team, or no budget). */
  teamBudgetUsdPerMonth: number | null;
}

export interface KeyStore {
  /** Lookup by SHA-256 hex of the presented key. */
  findByHash(hash: string): Promise<KeyLookup | null>;
  create(
    input: {
      name: string;
      teamId: string | null;
      scopes: string[];
      expiresAt: string | null;
      limits: LimitOverrides;
      /** Default null: every model. */
      allowedModels?: string[] | null;
      /** Default null: no budget. */
      budgetUsdPerMonth?: number | null;
      hash: string;
      prefix: string;
    },
    audit?: AuditContext,
  ): Promise<ApiKeyRecord>;
  /**
   * Keys oldest first, a page at a time: at most `limit` (default all) after the position `after`, optionally of one
   * team; `next` is the position to pass for the next page, null after the last.
   */
  list(opts?: {
    limit?: number;
    after?: AuditPosition;
    teamId?: string;
  }): Promise<{ keys: ApiKeyRecord[]; next: AuditPosition | null }>;
  get(id: string): Promise<ApiKeyRecord | null>;
  /** Only the given fields change; within `limits`, only the given budgets (null = back to the default). */
  update(
    id: string,
    patch: Partial<
      Pick<ApiKeyRecord, "name" | "scopes" | "expiresAt" | "allowedModels" | "budgetUsdPerMonth">
    > & {
      limits?: Partial<LimitOverrides>;
    },
    audit?: AuditContext,
  ): Promise<ApiKeyRecord | null>;
  revoke(id: string, audit?: AuditContext): Promise<ApiKeyRecord | null>;
  /** Atomically revoke `id` and create its replacement with the same settings. */
  rotate(
    id: string,
    replacement: { hash: string; prefix: string },
    audit?: AuditContext,
  ): Promise<ApiKeyRecord | null>;
}

/**
 * Every mutating KeyStore and TeamStore method takes an optional AuditContext: when given, the store records the
 * change's audit event in the change's own transaction (a change is never unaudited, a failed one never audited).
 */
export interface TeamStore {
  create(
    input: {
      name: string;
      limits: LimitOverrides;
      allowedModels?: string[] | null;
      budgetUsdPerMonth?: number | null;
    },
    audit?: AuditContext,
  ): Promise<Team>;
  list(): Promise<Team[]>;
  get(id: string): Promise<Team | null>;
  update(
    id: string,
    patch: {
      name?: string;
      limits?: Partial<LimitOverrides>;
      allowedModels?: string[] | null;
      budgetUsdPerMonth?: number | null;
    },
    audit?: AuditContext,
  ): Promise<Team | null>;
  /** Throws ConflictError while any key that is not revoked (expired included) still belongs to the team. */
  delete(id: string, audit?: AuditContext): Promise<boolean>;
}

// ---------------------------------------------------------------- audit log (PostgreSQL)

/** `<target>.<past tense>`; the list is AUDIT_ACTIONS in lib/audit.ts. */
export type AuditAction =
  | "team.created"
  | "team.updated"
  | "team.deleted"
  | "key.created"
  | "key.updated"
  | "key.revoked"
  | "key.rotated"
  | "kb.uploaded"
  | "kb.ingested"
  | "kb.source_deleted"
  | "kb.reset";

/** `kb_source` is a path under KB_DIR (a file or a directory); `kb_collection` the Chroma collection. */
export type AuditTargetType = "team" | "api_key" | "kb_source" | "kb_collection";

/** Who made an admin change, and from which request. */
export interface AuditContext {
  /** `master` for the master key, `key:<id>` for an API key (knowledge-base writes with `kb:write`). */
  actor: string;
  /** The request's x-request-id. */
  requestId: string | null;
  clientIp: string | null;
}

/**
 * Field (the admin API's snake_case name) → its value before and after. An update lists the fields it changed; a
 * creation lists every field with `before: null`, a deletion every field with `after: null`. Never a secret.
 */
export type AuditChanges = Record<string, { before: unknown; after: unknown }>;

export interface AuditEvent {
  id: string;
  at: string;
  actor: string;
  action: AuditAction;
  targetType: AuditTargetType;
  targetId: string;
  requestId: string | null;
  clientIp: string | null;
  changes: AuditChanges;
}

export type NewAuditEvent = AuditContext & Pick<AuditEvent, "action" | "targetType" | "targetId" | "changes">;

/** A position in the newest-first order: the exact `at` (microseconds, UTC) and `id` of the last event seen. */
export interface AuditPosition {
  at: string;
  id: string;
}

export interface AuditQuery {
  /** Inclusive. */
  from?: Date;
  /** Exclusive. */
  to?: Date;
  action?: AuditAction;
  targetId?: string;
  limit: number;
  /** Only events after this position (older ones), from a previous page. */
  after?: AuditPosition;
}

export interface AuditLog {
  /** Record a change made outside PostgreSQL (the knowledge base); key and team changes record their own. */
  record(event: NewAuditEvent): Promise<void>;
  /** Newest first; `next` is the position to continue from, null when this page is the last. */
  list(q: AuditQuery): Promise<{ events: AuditEvent[]; next: AuditPosition | null }>;
}

export interface UsageRow {
  requestId: string;
  createdAt: Date;
  keyId: string | null;
  teamId: string | null;
  route: string;
  requestedModel: string | null;
  servedModel: string | null;
  provider: string | null;
  promptTokens: number;
  completionTokens: number;
  /** Of the prompt tokens, how many the provider served from its prompt cache (priced lower). */
  cachedTokens: number;
  /** Of the prompt tokens, how many the provider wrote to its prompt cache (Anthropic; priced higher). */
  cacheWriteTokens: number;
  /** Of those, the writes to a 1-hour cache (priced higher still). Only for the cost; not a column of its own. */
  cacheWrite1hTokens?: number;
  /** USD at the served deployment's prices; null when tokens were served but no price is configured. */
  costUsd: number | null;
  latencyMs: number;
  status: number;
  errorCode: string | null;
  stream: boolean;
  cacheHit: boolean;
  /** Entity counts only, never values. */
  piiCounts: Record<string, number> | null;
}

/** Buffered, batched writer; never blocks the request path, never loses rows. */
export interface UsageSink {
  record(row: UsageRow): void;
  /** Write everything buffered now (resolves even if the database is down; rows stay buffered). */
  flush(): Promise<void>;
  /** The summed cost of the rows not yet written, by key or by team id, of rows created at or after `since`. */
  pendingCosts?(scope: "key" | "team", since: Date): Map<string, number>;
  /** Final flush; rows that cannot be written go to the on-disk spool. */
  close(): Promise<void>;
  pending(): number;
}

export interface UsageReportRow {
  group: string | null;
  /** For `key` and `team` groups: the key's or team's name (null when it no longer exists). */
  name?: string | null;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
  /** USD at the configured prices; null when no request of the group had a price. */
  costUsd: number | null;
  /** Requests whose cost is unknown (no price configured, or usage never reported); not in costUsd. */
  unpricedRequests: number;
  errors: number;
  cacheHits: number;
}

export const USAGE_GROUPS = ["key", "team", "model", "day", "week", "month", "route", "provider"] as const;
export const USAGE_ORDERS = ["group", "requests", "total_tokens", "cost_usd", "errors"] as const;

export interface UsageQuery {
  from: Date;
  to: Date;
  groupBy: (typeof USAGE_GROUPS)[number];
  /** Only rows matching every given field (`model`: the model that answered, else the one requested). */
  filter?: { keyId?: string; teamId?: string; model?: string; route?: string; provider?: string };
  /** `group` (default): by the group's value; the others largest first, ties by group. */
  orderBy?: (typeof USAGE_ORDERS)[number];
  /** At most this many groups (after ordering): a leaderboard. */
  limit?: number;
}

export interface UsageReport {
  aggregate(q: UsageQuery): Promise<UsageReportRow[]>;
}

export interface Database {
  /** True when a trivial query succeeds within a short timeout. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- upstream providers

export interface UpstreamChatRequest {
  /** The body to send, with `model` already set to the provider's model name. */
  body: Record<string, unknown>;
  /** Fires when the client has gone away (or a timeout passed): the provider stops the call. */
  signal: CancelSignal;
  requestId: string;
}

export type UpstreamChatResult =
  { kind: "json"; body: ChatCompletion } | { kind: "stream"; chunks: AsyncIterable<ChatCompletionChunk> };

export interface Provider {
  readonly name: string;
  readonly type: string;
  chat(req: UpstreamChatRequest): Promise<UpstreamChatResult>;
  embeddings(req: UpstreamChatRequest): Promise<EmbeddingResponse>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- rate limits and cache (Redis or in-process)

export interface Reservation {
  /** Commit the real token count (refund or overage) after the response. */
  reconcile(actualTokens: number): Promise<void>;
  /** Give back the reserved tokens (upstream failed). The request itself still counts. */
  release(): Promise<void>;
}

export interface AdmissionRequest {
  keyId: string;
  teamId: string | null;
  keyBudget: Budget;
  teamBudget: Budget | null;
  /** Prompt tokens + completion allowance. */
  tokens: number;
}

export type Admission =
  | { allowed: true; reservation: Reservation; headers: Record<string, string> }
  | {
      allowed: false;
      budget: string;
      scope: "key" | "team";
      /**
       * The limit the limiter enforced for `budget` of `scope`: the configured one, or this process's share of it
       * while limits are not shared across processes (Redis unavailable, fail-open).
       */
      limit: number;
      retryAfterSeconds: number;
      headers: Record<string, string>;
    };

export interface RateLimiter {
  admit(req: AdmissionRequest): Promise<Admission>;
  close(): Promise<void>;
  /** With Redis: whether it is connected now, and whether requests are refused while it is not (readiness). */
  redisHealth?(): { available: boolean; failClosed: boolean };
}

export interface CachedResponse {
  kind: "json" | "stream";
  /** JSON body, or the list of chunk objects of a completed stream. */
  body: ChatCompletion | ChatCompletionChunk[];
  /**
   * A JSON body's text, when known: stored instead of serializing `body` (which is then not read), and set on a hit
   * (lib/cache-entry.ts).
   */
  bodyText?: string;
}

export interface ResponseCache {
  get(key: string): Promise<CachedResponse | null>;
  set(key: string, value: CachedResponse, ttlSeconds: number): Promise<void>;
  close(): Promise<void>;
}
