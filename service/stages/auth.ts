/**
 * Authentication. API keys come as `Authorization: Bearer <key>` or `x-api-key: <key>`; they are looked up by
 * SHA-256 hash. A lookup is cached for KEY_CACHE_TTL_MS, so a key revoked on another replica stops working within
 * that bound (revocations through this process's admin API take effect at once).
 */
import type { Middleware, Context } from "koa";
import { LRUCache } from "lru-cache";
import { AuthenticationError, PermissionError, ServiceUnavailableError } from "../errors";
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

async function lookupKey(keys: KeyStore, hash: string, log: ProxyState["log"]): Promise<KeyLookup | null> {
  const fresh = keyCache.get(hash);
  if (fresh) return fresh.lookup;
  try {
    const lookup = await keys.findByHash(hash);
    keyCache.set(hash, { lookup });
    return lookup;
  } catch (error) {
    const stale = keyCache.get(hash, { allowStale: true });
    if (stale) {
      log.warn({ err: error }, "key store unavailable; using the last verified state of this key");
      return stale.lookup;
    }
    log.error({ err: error }, "key store unavailable");
    throw new ServiceUnavailableError(
      "The API key cannot be verified right now; retry shortly.",
      "database_unavailable",
      {
        "retry-after": "1",
      },
    );
  }
}

export function forgetKey(keyId: string): void {
  for (const [hash, entry] of keyCache.entries()) {
    if (entry.lookup?.key.id === keyId) keyCache.delete(hash);
  }
}

/** A team's limits or models changed: its keys' cached lookups carry the old ones. */
export function forgetTeam(teamId: string): void {
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
