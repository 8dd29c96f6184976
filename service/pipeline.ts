/**
 * The request pipeline: the only place where stage order is decided.
 *
 *   auth → parse → respond ↴ (writes whatever comes back, JSON or SSE)
 *     content policy → token count → rate limit (reserve … reconcile) → PII scrub (… restore) → RAG
 *     → token count again (after RAG) → cache → upstream (routing, fallbacks, streaming)
 *
 * Stages before `respond` run first on the way in; stages after it may wrap `ctx.state.result` on the way out
 * (PII restore, cache store, limit reconciliation), so the writer always sees the final response.
 */
import type { Middleware } from "koa";
import type { AppDeps } from "./app";
import type { ProxyState } from "./state";
import { createAuth } from "./stages/auth";
import { createParseChat, createParseEmbeddings } from "./stages/parse";
import { createRespond } from "./stages/respond";
import { createContentPolicy } from "./stages/content-policy";
import { createTokenCount } from "./stages/token-count";
import { createRateLimit } from "./stages/rate-limit";
import { createPii } from "./stages/pii";
import { createRag } from "./stages/rag";
import { createCache } from "./stages/cache";
import { createUpstreamChat, createUpstreamEmbeddings } from "./stages/upstream";

export type Stage = Middleware<ProxyState>;

export function chatPipeline(deps: AppDeps): Stage[] {
  const pii = deps.pii;
  return [
    createAuth({ keys: deps.keys, scope: "chat" }),
    createParseChat({ config: deps.config, providers: deps.providers }),
    createRespond(),
    createContentPolicy({ config: deps.config }),
    createTokenCount({ config: deps.config, phase: "initial" }),
    createRateLimit({ config: deps.config, limiter: deps.rateLimiter }),
    createPii({ engine: deps.pii, mode: "reversible" }),
    createRag({
      kb: deps.kb,
      config: deps.config,
      ...(pii ? { redact: (text: string) => pii.newSession().redact(text) } : {}),
    }),
    createTokenCount({ config: deps.config, phase: "after-rag" }),
    createCache({ config: deps.config, cache: deps.cache }),
    createUpstreamChat({ config: deps.config, providers: deps.providers }),
  ];
}

export function embeddingsPipeline(deps: AppDeps): Stage[] {
  return [
    createAuth({ keys: deps.keys, scope: "embeddings" }),
    createParseEmbeddings({ config: deps.config, providers: deps.providers }),
    createRespond(),
    createContentPolicy({ config: deps.config }),
    createTokenCount({ config: deps.config, phase: "initial" }),
    createRateLimit({ config: deps.config, limiter: deps.rateLimiter }),
    createPii({ engine: deps.pii, mode: "redact" }),
    createUpstreamEmbeddings({ config: deps.config, providers: deps.providers }),
  ];
}
