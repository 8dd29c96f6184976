/**
 * Exact-match response cache, right before the upstream call (after PII scrub and RAG, so the key — and the stored
 * answer — hold placeholders, never the raw personal data; PII restore runs on the way out on hits too).
 *
 * PII placeholders are random per request, so they are numbered before they reach the key or the store
 * (`canonicalMaps`): the answer is stored with canonical placeholders and a hit maps them to this request's own, which
 * the PII stage then restores to this caller's values. The provider only ever saw placeholders, so two requests that
 * scrub to the same canonical prompt get the same answer whatever the values were.
 *
 * - Key: lib/cache-key.ts (every output-relevant field, scoped per team by default, response mode included).
 * - `Cache-Control: no-cache` skips the read, `no-store` skips the write (`x-cache: bypass` when the read is skipped).
 * - Hit: the stored JSON body, or the stored chunks replayed as a stream (same chunk objects, so the same SSE
 *   framing); `x-cache: hit`; the usage row is flagged as a cache hit with zero provider tokens; next() is not called.
 *   Hits still count against request budgets: the rate-limit stage ran before this one.
 * - Miss: next(), then store the JSON body, or tee the stream and store it only when it completed (never an
 *   errored or cut stream). Stores happen in the background; a cache failure never fails the request.
 */
import type { Middleware } from "koa";
import { Counter } from "prom-client";
import type { Config } from "../config";
import { cacheScope, chatCacheKey } from "../lib/cache-key";
import {
  CANONICAL_PLACEHOLDER_RE,
  canonicalMaps,
  restoreChatCompletion,
  restoreChunkList,
  type CanonicalMaps,
} from "../lib/pii";
import { registry } from "../metrics";
import type { CachedResponse, ResponseCache } from "../ports";
import { addResponseHeaders, type ProxyState } from "../state";
import type { ChatCompletion, ChatCompletionChunk } from "../types";

export const cacheLookups = new Counter({
  name: "llmproxy_cache_lookups_total",
  help: "Response-cache lookups by result (hit, miss, bypass).",
  labelNames: ["result"] as const,
  registers: [registry],
});

export const cacheStores = new Counter({
  name: "llmproxy_cache_stores_total",
  help: "Responses stored in the cache, by kind (json, stream).",
  labelNames: ["kind"] as const,
  registers: [registry],
});

/** Streams longer than this (serialized chunk JSON) are served but not stored, in bytes. */
export const MAX_CACHED_STREAM_BYTES = 1024 * 1024;

export interface CacheDeps {
  config: Config;
  /** null when caching is off. */
  cache: ResponseCache | null;
}

const NO_CACHE = /(^|[\s,])no-cache([\s,=]|$)/i;
const NO_STORE = /(^|[\s,])no-store([\s,]|$)/i;

function cacheControl(header: string): { noCache: boolean; noStore: boolean } {
  return { noCache: NO_CACHE.test(header), noStore: NO_STORE.test(header) };
}

async function* replay(chunks: ChatCompletionChunk[]): AsyncGenerator<ChatCompletionChunk> {
  for (const chunk of chunks) yield chunk;
}

/**
 * The cache key with this request's placeholders numbered; null (no caching) if the request already holds
 * canonical-looking placeholders, which the numbering could not tell apart from its own.
 */
function keyFor(
  scope: string,
  mode: "json" | "stream",
  chat: Record<string, unknown>,
  canonical: CanonicalMaps | null,
): string | null {
  if (!canonical) return chatCacheKey(scope, mode, chat);
  return chatCacheKey(scope, mode, chat, (json) =>
    CANONICAL_PLACEHOLDER_RE.test(json) ? null : canonical.toCanonical.restore(json),
  );
}

/** The JSON text of `value`, or undefined if it cannot be serialized (a RangeError: nested too deep). */
function serialized(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

/**
 * Pass the chunks through while keeping a snapshot of each (taken before later stages can mutate it); hand the list
 * to `store` only if the stream ran to its end.
 */
async function* teeForCache(
  chunks: AsyncIterable<ChatCompletionChunk>,
  store: (chunks: ChatCompletionChunk[]) => void,
): AsyncGenerator<ChatCompletionChunk> {
  const frames: string[] = [];
  let bytes = 0;
  let complete = false;
  try {
    for await (const chunk of chunks) {
      if (bytes <= MAX_CACHED_STREAM_BYTES) {
        const frame = serialized(chunk);
        // A chunk that cannot be serialized (nested too deep): the stream is served, not stored.
        bytes = frame === undefined ? Infinity : bytes + frame.length;
        if (frame !== undefined) frames.push(frame);
      }
      yield chunk;
    }
    complete = true;
  } finally {
    if (complete && bytes <= MAX_CACHED_STREAM_BYTES && frames.length > 0) {
      store(JSON.parse(`[${frames.join(",")}]`) as ChatCompletionChunk[]);
    }
  }
}

export function createCache(deps: CacheDeps): Middleware<ProxyState> {
  const responseCache = deps.cache;
  const { enabled, ttlSeconds, scope: scopeMode } = deps.config.cache;
  return async function cache(ctx, next) {
    const chat = ctx.state.chat;
    if (!responseCache || !enabled || !chat) return next();
    const principal = ctx.state.principal;
    const scope = cacheScope(
      scopeMode,
      principal?.kind === "key"
        ? { keyId: principal.key.id, teamId: principal.key.teamId }
        : { master: true },
    );
    const mode = chat.stream === true ? "stream" : "json";
    const placeholders = ctx.state.piiPlaceholders;
    const canonical = placeholders ? canonicalMaps(placeholders) : null;
    const key = keyFor(scope, mode, chat, canonical);
    const control = cacheControl(ctx.get("cache-control"));
    const noCache = control.noCache || key === null;
    const noStore = control.noStore || key === null;
    const log = ctx.state.log;

    if (!noCache) {
      const hit = await responseCache.get(key!);
      if (hit && hit.kind === mode) {
        cacheLookups.inc({ result: "hit" });
        ctx.state.cacheStatus = "hit";
        addResponseHeaders(ctx.state, { "x-cache": "hit" });
        const usage = ctx.state.usage;
        usage.cacheHit = true;
        usage.promptTokens = 0;
        usage.completionTokens = 0;
        usage.servedModel = ctx.state.deployment?.name ?? chat.model;
        // Stored with canonical placeholders: hand this request's own to the PII restore further out.
        const fromCanonical = canonical?.fromCanonical;
        ctx.state.result =
          hit.kind === "json"
            ? {
                kind: "json",
                body: fromCanonical
                  ? restoreChatCompletion(hit.body as ChatCompletion, fromCanonical)
                  : (hit.body as ChatCompletion),
                text: fromCanonical ? undefined : hit.bodyText,
              }
            : {
                kind: "stream",
                chunks: replay(
                  fromCanonical
                    ? restoreChunkList(hit.body as ChatCompletionChunk[], fromCanonical)
                    : (hit.body as ChatCompletionChunk[]),
                ),
                includeUsage: chat.stream_options?.include_usage === true,
              };
        return;
      }
    }
    cacheLookups.inc({ result: noCache ? "bypass" : "miss" });
    ctx.state.cacheStatus = noCache ? "bypass" : "miss";
    addResponseHeaders(ctx.state, { "x-cache": ctx.state.cacheStatus });

    await next();

    const result = ctx.state.result;
    if (noStore || !result) return;
    const storeFailed = (error: unknown) =>
      log.warn({ err: (error as Error).message }, "response cache: store failed");
    // `entry` builds what is stored: an answer it cannot serialize (a RangeError from one nested too deep) is not
    // stored, and never fails the request.
    const store = (entry: () => CachedResponse) => {
      let value: CachedResponse;
      try {
        value = entry();
      } catch (error) {
        storeFailed(error);
        return;
      }
      responseCache
        .set(key!, value, ttlSeconds)
        .then(() => cacheStores.inc({ kind: value.kind }), storeFailed);
    };
    const toCanonical = canonical?.toCanonical;
    if (result.kind === "json") {
      if (result.text !== undefined && !toCanonical) {
        // The upstream's text is the snapshot: stored as is, the body object is not read.
        store(() => ({ kind: "json", body: result.body as ChatCompletion, bodyText: result.text }));
      } else {
        // Snapshot now: stages further out (PII restore) rewrite the body after this returns.
        store(() => {
          const body = JSON.parse(JSON.stringify(result.body)) as ChatCompletion;
          return { kind: "json", body: toCanonical ? restoreChatCompletion(body, toCanonical) : body };
        });
      }
    } else {
      result.chunks = teeForCache(result.chunks, (chunks) =>
        store(() => ({ kind: "stream", body: toCanonical ? restoreChunkList(chunks, toCanonical) : chunks })),
      );
    }
  };
}
