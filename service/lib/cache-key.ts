/**
 * Response-cache keys: SHA-256 over the canonical JSON (object keys sorted, recursively) of everything in the chat
 * request that can change the answer — model, messages, tools, tool_choice, temperature, top_p, max_tokens,
 * max_completion_tokens, response_format, seed, stop, n, logprobs, logit_bias, penalties, reasoning_effort,
 * service_tier and any field the proxy does not know (unknown fields are assumed to matter).
 *
 * Left out, because they do not change the generated output:
 * - `stream`, `stream_options`: the response mode is part of the key instead (`json` | `stream`), so a hit replays
 *   exactly what the upstream produced in that mode; include_usage only decides whether the usage chunk is shown.
 * - `user`, `safety_identifier`: end-user identifiers for abuse monitoring.
 * - `metadata`, `store`: stored-completions bookkeeping on the provider side.
 * - `prompt_cache_key`: a routing hint for the provider's prompt cache.
 *
 * The key is computed on the request as sent upstream (after PII scrub and RAG; placeholders numbered, not random),
 * and scoped: per team (default),
 * per key, or global — one tenant never receives another tenant's answer.
 */
import crypto from "node:crypto";

export const CACHE_KEY_VERSION = 1;

/** Request fields that never affect the output (see above). */
export const CACHE_KEY_IGNORED_FIELDS: ReadonlySet<string> = new Set([
  "stream",
  "stream_options",
  "user",
  "safety_identifier",
  "metadata",
  "store",
  "prompt_cache_key",
]);

export type CacheScopeMode = "team" | "key" | "global";

/** The partition a cached answer belongs to. Master-key requests share one partition of their own. */
export function cacheScope(
  mode: CacheScopeMode,
  principal: { keyId: string; teamId: string | null } | { master: true },
): string {
  if (mode === "global") return "global";
  if ("master" in principal) return "master";
  if (mode === "team" && principal.teamId) return `team:${principal.teamId}`;
  return `key:${principal.keyId}`;
}

/**
 * JSON with object keys sorted at every level; `undefined` members are dropped as JSON.stringify does. Runs on every
 * cached request over its whole body: keys already in order (as clients send them, mostly) are not sorted again,
 * and the text is built in one string.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    const s = JSON.stringify(value);
    return s === undefined ? "null" : s;
  }
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (i) out += ",";
      out += v === undefined || typeof v === "function" ? "null" : canonicalJson(v);
    }
    return `${out}]`;
  }
  const obj = value as Record<string, unknown>;
  let keys = Object.keys(obj);
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1] > keys[i]) {
      keys = keys.sort();
      break;
    }
  }
  let out = "{";
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined || typeof v === "function") continue;
    out += `${first ? "" : ","}${JSON.stringify(k)}:${canonicalJson(v)}`;
    first = false;
  }
  return `${out}}`;
}

/**
 * The cache key of a chat request in a scope and response mode: hex SHA-256. `rewrite` transforms the canonical JSON
 * before hashing (the cache stage numbers PII placeholders with it); when it returns null the request has no key.
 */
export function chatCacheKey(
  scope: string,
  mode: "json" | "stream",
  body: Record<string, unknown>,
  rewrite?: (json: string) => string | null,
): string | null {
  // No prototype: an own `__proto__` member of the body is copied as a member, not set as a prototype.
  const relevant = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of Object.entries(body)) {
    if (!CACHE_KEY_IGNORED_FIELDS.has(k)) relevant[k] = v;
  }
  const json = canonicalJson({ v: CACHE_KEY_VERSION, scope, mode, body: relevant });
  const material = rewrite ? rewrite(json) : json;
  return material === null ? null : crypto.hash("sha256", material, "hex");
}
