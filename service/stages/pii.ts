/**
 * PII scrub and restore. On the way in, every text the provider would see (system, developer, user, assistant and
 * tool messages, text parts, tool-call arguments) gets reversible typed placeholders — secrets get irreversible
 * markers — and `/v1/embeddings` input is redacted irreversibly. On the way out the placeholders are restored in
 * message content and tool-call arguments, JSON and streams alike; a placeholder split across chunk boundaries is
 * still restored (createChunkRestorer holds back only a possible placeholder prefix).
 * Entity counts (never values) go into the usage row and metrics.
 *
 * Caching: placeholders are random per request; the cache stage keys and stores on them in canonical form
 * (numbered in issue order, see lib/pii/session.ts), so a prompt with PII caches like any other, and the stored
 * answer holds no values.
 */
import type { Middleware } from "koa";
import {
  restoreChatCompletion,
  restoreChunkStream,
  scrubChatRequest,
  scrubEmbeddingInput,
  type PiiEngine,
  type Restorer,
} from "../lib/pii";
import { registry } from "../metrics";
import { HotCounter } from "../lib/hot-metrics";
import type { ProxyState } from "../state";
import type { ChatCompletion, ChatCompletionChunk } from "../types";

export type PiiEngineLike = PiiEngine;

// Counted on every request with PII: the cheap per-request counter (lib/hot-metrics.ts), same text on /metrics.
const entitiesTotal = new HotCounter({
  name: "llmproxy_pii_entities_total",
  help: "PII entities scrubbed from requests, by entity type.",
  labelNames: ["entity"] as const,
  registers: [registry],
});

export async function* restoreStream(
  chunks: AsyncIterable<ChatCompletionChunk>,
  session: Restorer,
): AsyncGenerator<ChatCompletionChunk> {
  const order = restoreChunkStream(session);
  for await (const chunk of chunks) yield* order.push(chunk);
  yield* order.end();
}

export interface PiiDeps {
  engine: PiiEngineLike | null;
  /** reversible: chat (restore the answer); redact: embeddings (nothing to restore). */
  mode: "reversible" | "redact";
}

export function createPii(deps: PiiDeps): Middleware<ProxyState> {
  return async function pii(ctx, next) {
    if (!deps.engine) return next();
    const session = deps.engine.newSession();
    if (ctx.state.chat) {
      ctx.state.chat = scrubChatRequest(ctx.state.chat, session);
      const placeholders = session.placeholders();
      if (placeholders.length > 0) ctx.state.piiPlaceholders = placeholders;
    }
    if (ctx.state.embedding) {
      ctx.state.embedding = {
        ...ctx.state.embedding,
        input: scrubEmbeddingInput(ctx.state.embedding.input, session),
      };
    }
    const counts: Record<string, number> = {};
    for (const [entity, n] of Object.entries(session.counts())) {
      if (n > 0) {
        counts[entity] = n;
        entitiesTotal.inc({ entity }, n);
      }
    }
    if (Object.keys(counts).length) {
      ctx.state.piiCounts = counts;
      ctx.state.usage.piiCounts = counts;
    }

    await next();

    const result = ctx.state.result;
    if (!result || deps.mode === "redact" || !ctx.state.piiCounts) return;
    if (result.kind === "json") {
      result.body = restoreChatCompletion(result.body as ChatCompletion, session);
      result.text = undefined;
    } else result.chunks = restoreStream(result.chunks, session);
  };
}
