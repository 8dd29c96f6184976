/**
 * Authentication. API keys come as `Authorization: Bearer <key>` or `x-api-key: <key>`; they are looked up by
 * SHA-256 hash. A lookup is cached for KEY_CACHE_TTL_MS, so a key revoked on another replica stops working within
 * that bound (revocations through this process's admin API take effect at once).
 */
import type { Middleware, Context } from "koa";
import { LRUCache } from "lru-cache";
import {
  AuthenticationError,
  databaseUnavailable,
  PermissionError,
  type ServiceUnavailableError,
} from "../errors";
import { hashApiKey, secretsEqual } from "../lib/keys";
import type { KeyLookup, KeyStore } from "../ports";
import type { ProxyState } from "../state";

/** Documented bound: a revoked key stops working on every replica within this time. */
export const KEY_CACHE_TTL_MS = 5_000;

/**
 * The key a request presents: a Bearer token, else `x-api-key` (a client or gateway may add another kind of
 * Authorization header, e.g. Basic for an ingress, beside its x-api-key).
 */
export function presentedKey(ctx: Context): string | null {
  const header = ctx.get("authorization");
  const bearer = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (bearer) return bearer[1];
  const apiKey = ctx.get("x-api-key").trim();
  return apiKey || null;
}

/** Why no key was found, naming a malformed Authorization header when there was one. */
function missingKey(ctx: Context): AuthenticationError {
  const header = ctx.get("authorization");
  const how = "Send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.";
  return new AuthenticationError(
    header
      ? `The Authorization header is not \`Bearer <key>\` and there is no x-api-key header. ${how}`
      : `Missing API key. ${how}`,
    "missing_api_key",
  );
}

/**
 * One shared cache per process, keyed by key hash; `forgetKey` evicts a revoked key immediately. Expired entries
 * are kept (not served) so that, while PostgreSQL is unreachable, a key verified before the outage keeps working
 * instead of every request failing: availability over a revocation that cannot be read anyway.
 */
const keyCache = new LRUCache<string, { lookup: KeyLookup | null }>({
  max: 50_000,
  ttl: KEY_CACHE_TTL_MS,
  noDeleteOnStaleGet: true,
});

/**
 * How long a request whose key has a verified (stale) entry waits for its re-check before it goes on with that entry:
 * a PostgreSQL that hangs (a failover, a network partition: connects time out after 5 s, queries after 35 s) must
 * not hold every request for that long.
 */
export const KEY_RECHECK_WAIT_MS = 1_000;

/** After a failed or slow lookup, PostgreSQL is taken as down for this long: no request waits for it meanwhile. */
const DOWN_MS = 2_000;
let downUntil = 0;

/** One lookup per key at a time: a burst of requests with one key during an outage is one query, not hundreds. */
const inflight = new Map<string, Promise<KeyLookup | null>>();

/** At most one warning a second for requests served from a key's last verified state (not one per request). */
let lastStaleWarning = 0;

/**
 * Bumped by every forget: a lookup that began before a revocation (or a key or team change) must not put what it
 * read into the cache after the change was applied to it.
 */
let generation = 0;

function fetchLookup(keys: KeyStore, hash: string): Promise<KeyLookup | null> {
  let pending = inflight.get(hash);
  if (!pending) {
    const started = generation;
    pending = keys.findByHash(hash).then(
      (lookup) => {
        if (started === generation) keyCache.set(hash, { lookup });
        downUntil = 0;
        return lookup;
      },
      (error: unknown) => {
        downUntil = Date.now() + DOWN_MS;
        throw error;
      },
    );
    const mine = pending;
    // Only its own entry: a forget may have replaced it with a newer lookup meanwhile.
    const settled = pending.finally(() => {
      if (inflight.get(hash) === mine) inflight.delete(hash);
    });
    settled.catch(() => undefined);
    inflight.set(hash, pending);
  }
  return pending;
}

const TIMED_OUT = Symbol("timed out");

function unavailable(): ServiceUnavailableError {
  return databaseUnavailable("The API key cannot be verified right now; retry shortly.");
}

async function lookupKey(keys: KeyStore, hash: string, log: ProxyState["log"]): Promise<KeyLookup | null> {
  const fresh = keyCache.get(hash);
  if (fresh) return fresh.lookup;
  const stale = keyCache.get(hash, { allowStale: true });
  const useStale = (why: unknown) => {
    const now = Date.now();
    if (now - lastStaleWarning >= 1_000) {
      lastStaleWarning = now;
      log.warn({ err: why }, "key store unavailable; using the last verified state of keys");
    }
    return stale!.lookup;
  };
  if (Date.now() < downUntil) {
    // PostgreSQL failed moments ago: do not wait for it again. A key verified before goes on; a new one cannot be
    // verified (503). One lookup for this key still runs in the background, so recovery is seen at once.
    fetchLookup(keys, hash).catch(() => undefined);
    if (stale) return useStale("database unavailable moments ago");
    throw unavailable();
  }
  const pending = fetchLookup(keys, hash);
  try {
    if (!stale) return await pending;
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([
      pending,
      new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(resolve, KEY_RECHECK_WAIT_MS, TIMED_OUT);
      }),
    ]).finally(() => clearTimeout(timer));
    if (waited !== TIMED_OUT) return waited;
    downUntil = Date.now() + DOWN_MS;
    return useStale(`no answer from the key store in ${KEY_RECHECK_WAIT_MS} ms`);
  } catch (error) {
    if (stale) return useStale(error);
    log.error({ err: error }, "key store unavailable");
    throw unavailable();
  }
}

export function forgetKey(keyId: string): void {
  generation++;
  inflight.clear(); // later requests look the key up afresh, not through a lookup that began before the change
  for (const [hash, entry] of keyCache.entries()) {
    if (entry.lookup?.key.id === keyId) keyCache.delete(hash);
  }
}

/** A team's limits or models changed: its keys' cached lookups carry the old ones. */
export function forgetTeam(teamId: string): void {
  generation++;
  inflight.clear();
  for (const [hash, entry] of keyCache.entries()) {
    if (entry.lookup?.key.teamId === teamId) keyCache.delete(hash);
  }
}

export function scopeAllows(scopes: readonly string[], scope: string): boolean {
  if (scopes.includes("*") || scopes.includes(scope)) return true;
  // `rag:*` style wildcards: "kb:*" grants "kb:write".
  const family = scope.split(":")[0];
  return scopes.includes(`${family}:*`);
}

export interface AuthDeps {
  keys: KeyStore;
  /** The scope this endpoint needs (`chat`, `embeddings`, `models`, `kb:write`). */
  scope: string;
  /** Also accept the master key (knowledge-base ingestion). */
  masterKey?: string | null;
}

export function createAuth(deps: AuthDeps): Middleware<ProxyState> {
  return async function auth(ctx, next) {
    const presented = presentedKey(ctx);
    if (!presented) throw missingKey(ctx);
    if (deps.masterKey && secretsEqual(presented, deps.masterKey)) {
      ctx.state.principal = { kind: "master" };
      return next();
    }
    const lookup = await lookupKey(deps.keys, hashApiKey(presented), ctx.state.log);
    // Lookup is by SHA-256 of the presented key: timing reveals nothing an attacker can steer towards a real key.
    if (!lookup) throw new AuthenticationError();
    const { key } = lookup;
    if (key.revokedAt) throw new AuthenticationError("This API key has been revoked.", "revoked_api_key");
    if (key.expiresAt && Date.parse(key.expiresAt) <= Date.now()) {
      throw new AuthenticationError("This API key has expired.", "expired_api_key");
    }
    ctx.state.principal = {
      kind: "key",
      key,
      teamLimits: lookup.teamLimits,
      teamAllowedModels: lookup.teamAllowedModels,
      teamBudgetUsdPerMonth: lookup.teamBudgetUsdPerMonth,
    };
    ctx.state.usage.keyId = key.id;
    ctx.state.usage.teamId = key.teamId;
    if (!scopeAllows(key.scopes, deps.scope)) {
      throw new PermissionError(`This API key lacks the \`${deps.scope}\` scope.`);
    }
    return next();
  };
}

/** Whether the caller may use this client-facing model: the key's list and its team's list must both allow it. */
export function modelAllowed(principal: ProxyState["principal"], model: string): boolean {
  if (principal?.kind !== "key") return true;
  const lists = [principal.key.allowedModels, principal.teamAllowedModels];
  return lists.every((list) => list == null || list.includes(model));
}

/** Admin endpoints: the master key only. */
export function createMasterAuth(deps: { masterKey: string | null }): Middleware<ProxyState> {
  return async function masterAuth(ctx, next) {
    const presented = presentedKey(ctx);
    if (!presented) throw new AuthenticationError("Missing master key.", "missing_api_key");
    if (!deps.masterKey || !secretsEqual(presented, deps.masterKey)) {
      throw new PermissionError("This endpoint requires the master key.", "master_key_required");
    }
    ctx.state.principal = { kind: "master" };
    return next();
  };
}
