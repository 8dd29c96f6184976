/**
 * The request pipeline: the only place where stage order is decided.
 *
 *   auth → parse → budget → respond ↴ (writes whatever comes back, JSON or SSE)
 *     content policy → token count → rate limit (reserve … reconcile) → PII scrub (… restore) → RAG
 *     → token count again (after RAG) → cache → upstream (routing, fallbacks, streaming)
 *
 * Stages before `respond` run first on the way in; stages after it may wrap `ctx.state.result` on the way out
 * (PII restore, cache store, limit reconciliation), so the writer always sees the final response.
 *
 * A stage whose feature is off in this process (no limiter, no PII engine, no knowledge base, no cache, no blocked
 * patterns) is left out of the chain rather than called to do nothing: each one is a frame and a promise per request.
 */
import type { Middleware } from "koa";
import type { AppDeps } from "./app";
import type { ProxyState } from "./state";
import { createAuth } from "./stages/auth";
import {
  createParseChat,
  createParseEmbeddings,
  createParseMessages,
  createParseResponses,
} from "./stages/parse";
import { createRespond } from "./stages/respond";
import { createBudget } from "./stages/budget";
import { createContentPolicy } from "./stages/content-policy";
import { createTokenCount } from "./stages/token-count";
import { createRateLimit } from "./stages/rate-limit";
import { createPii } from "./stages/pii";
import { createRag } from "./stages/rag";
import { createCache } from "./stages/cache";
import { createUpstreamChat, createUpstreamEmbeddings } from "./stages/upstream";

export type Stage = Middleware<ProxyState>;

/** The stages that are on, in order. */
function active(...stages: Array<Stage | false | null | undefined>): Stage[] {
  return stages.filter((s): s is Stage => typeof s === "function");
}

const PARSERS = { chat: createParseChat, messages: createParseMessages, responses: createParseResponses };

/**
 * POST /v1/chat/completions; with `wire: "messages"` POST /v1/messages (Anthropic in and out), with
 * `wire: "responses"` POST /v1/responses — the same stages, only the two ends translate.
 */
export function chatPipeline(deps: AppDeps, wire: keyof typeof PARSERS = "chat"): Stage[] {
  const { config, pii } = deps;
  const policy = config.contentPolicy.blockedPatterns.length > 0;
  const parse = PARSERS[wire];
  return active(
    createAuth({ keys: deps.keys, scope: "chat" }),
    parse({ config, providers: deps.providers }),
    deps.spend && createBudget({ spend: deps.spend }),
    createRespond(),
    policy && createContentPolicy({ config }),
    createTokenCount({ config, phase: "initial" }),
    deps.rateLimiter && createRateLimit({ config, limiter: deps.rateLimiter }),
    pii && createPii({ engine: pii, mode: "reversible" }),
    deps.kb &&
      createRag({
        kb: deps.kb,
        config,
        ...(pii ? { redact: (text: string) => pii.newSession().redact(text) } : {}),
      }),
    deps.kb && createTokenCount({ config, phase: "after-rag" }),
    deps.cache && config.cache.enabled && createCache({ config, cache: deps.cache }),
    createUpstreamChat({ config, providers: deps.providers }),
  );
}

export function embeddingsPipeline(deps: AppDeps): Stage[] {
  const { config } = deps;
  return active(
    createAuth({ keys: deps.keys, scope: "embeddings" }),
    createParseEmbeddings({ config, providers: deps.providers }),
    deps.spend && createBudget({ spend: deps.spend }),
    createRespond(),
    config.contentPolicy.blockedPatterns.length > 0 && createContentPolicy({ config }),
    createTokenCount({ config, phase: "initial" }),
    deps.rateLimiter && createRateLimit({ config, limiter: deps.rateLimiter }),
    deps.pii && createPii({ engine: deps.pii, mode: "redact" }),
    createUpstreamEmbeddings({ config, providers: deps.providers }),
  );
}
