/**
 * Anthropic's Messages API (`type: anthropic`), translated to and from the OpenAI wire format the proxy speaks
 * (anthropic-translate.ts), over the same pooled HTTP plumbing as the OpenAI-compatible provider. Auth is
 * `x-api-key` plus `anthropic-version`; Anthropic has no embeddings API (the config refuses embedding models here).
 * With `prompt_caching` (default on) every request carries a top-level `cache_control`, so Anthropic caches the
 * longest cacheable prefix (system prompt, tools, earlier turns) and later requests read it at a tenth of the price;
 * prompts under the model's caching minimum are not cached and cost nothing extra.
 */
import type { ProviderConfig } from "../config";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "../lib/body";
import { InvalidRequestError, ProxyError } from "../errors";
import type { Provider, UpstreamChatResult } from "../ports";
import type { ChatCompletionChunk, EmbeddingResponse } from "../types";
import {
  createStreamTranslator,
  fromAnthropicMessage,
  toAnthropicRequest,
  type AnthropicMessage,
} from "./anthropic-translate";
import { ProviderFailure } from "./errors";
import {
  badEvent,
  createHttpProvider,
  requestHeaders,
  errorEvent,
  firstThenRest,
  sseMessages,
  type ResponseBody,
} from "./http";

type AnthropicConfig = Extract<ProviderConfig, { type: "anthropic" }>;

export function createAnthropicProvider(cfg: AnthropicConfig): Provider {
  const http = createHttpProvider(cfg);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "anthropic-version": cfg.version,
    ...cfg.headers,
  };
  if (cfg.apiKey) headers["x-api-key"] = cfg.apiKey;
  const withId = requestHeaders(headers);

  function translate(body: Record<string, unknown>): Record<string, unknown> {
    try {
      const out = toAnthropicRequest(body, cfg.defaultMaxTokens);
      if (cfg.promptCaching) out.cache_control = { type: "ephemeral" };
      return out;
    } catch (error) {
      // The request cannot be expressed for this provider: the client's to fix, no retry.
      if (error instanceof ProxyError) throw new ProviderFailure(`${cfg.name}: untranslatable`, false, error);
      throw error;
    }
  }

  return {
    name: cfg.name,
    type: "anthropic",
    async chat(req): Promise<UpstreamChatResult> {
      const body = translate(req.body);
      const path = `${http.basePath}/messages`;
      if (body.stream !== true) {
        const message = await http.postJson<AnthropicMessage>(path, withId(req.requestId), body, req.signal);
        return { kind: "json", body: fromAnthropicMessage(message) };
      }
      const res = await http.post(path, withId(req.requestId), body, req.signal);
      return { kind: "stream", chunks: await firstThenRest(chunks(res.body, cfg.name), cfg.name) };
    },
    async embeddings(): Promise<EmbeddingResponse> {
      throw new ProviderFailure(
        `${cfg.name}: no embeddings`,
        false,
        new InvalidRequestError("Anthropic offers no embeddings API.", "unsupported_by_provider", "model"),
      );
    },
    close: () => http.close(),
  };
}

/** Anthropic SSE events → chat.completion.chunks; ends at `message_stop`; an `error` event or a cut stream throws. */
async function* chunks(body: ResponseBody, provider: string): AsyncGenerator<ChatCompletionChunk> {
  const translator = createStreamTranslator();
  for await (const { data } of sseMessages(body, provider, isStop)) {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(data) as Record<string, unknown>;
    } catch {
      throw badEvent(provider);
    }
    // As deep as no event is: the translation and the proxy's walks would overflow the stack.
    if (nestsDeeperThan(event, MAX_JSON_DEPTH)) throw badEvent(provider);
    if (event.type === "error") throw errorEvent(provider, (event.error as { type?: unknown } | null)?.type);
    yield* translator.push(event);
  }
}

const isStop = (m: { event?: string; data: string }) =>
  m.event === "message_stop" || (m.event === undefined && m.data.includes('"type":"message_stop"'));
