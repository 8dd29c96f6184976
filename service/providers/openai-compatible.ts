/**
 * Any OpenAI-compatible API (OpenAI, Azure OpenAI, vLLM, Ollama, LM Studio …) over one keep-alive undici Pool per
 * provider. A streaming call resolves only once the first event has arrived, so the caller can still fall back
 * before anything reached the client; after that, an idle gap longer than the timeout ends the stream with an error.
 */
import type { ProviderConfig } from "../config";
import type { Provider, UpstreamChatResult } from "../ports";
import type { ChatCompletion, ChatCompletionChunk, EmbeddingResponse } from "../types";
import {
  badEvent,
  createHttpProvider,
  requestHeaders,
  errorEvent,
  firstThenRest,
  sseMessages,
  type ResponseBody,
} from "./http";

type OpenAIConfig = Extract<ProviderConfig, { type: "openai" }>;

export function createOpenAICompatibleProvider(cfg: OpenAIConfig): Provider {
  const http = createHttpProvider(cfg);
  const query = new URLSearchParams(cfg.query).toString();
  const url = (path: string) => `${http.basePath}${path}${query ? `?${query}` : ""}`;
  const headers: Record<string, string> = { "content-type": "application/json", ...cfg.headers };
  if (cfg.apiKey) {
    if (cfg.authHeader === "api-key") headers["api-key"] = cfg.apiKey;
    else headers.authorization = `Bearer ${cfg.apiKey}`;
  }
  const withId = requestHeaders(headers);

  return {
    name: cfg.name,
    type: "openai",
    async chat(req): Promise<UpstreamChatResult> {
      if (req.body.stream !== true) {
        const body = await http.postJson<ChatCompletion>(
          url("/chat/completions"),
          withId(req.requestId),
          req.body,
          req.signal,
        );
        return { kind: "json", body };
      }
      const res = await http.post(url("/chat/completions"), withId(req.requestId), req.body, req.signal);
      return { kind: "stream", chunks: await firstThenRest(chunks(res.body, cfg.name), cfg.name) };
    },
    async embeddings(req): Promise<EmbeddingResponse> {
      return http.postJson<EmbeddingResponse>(
        url("/embeddings"),
        withId(req.requestId),
        req.body,
        req.signal,
      );
    },
    close: () => http.close(),
  };
}

/** Parse an SSE body into chunk objects; ends at `data: [DONE]`; an `error` event or a cut stream throws. */
async function* chunks(body: ResponseBody, provider: string): AsyncGenerator<ChatCompletionChunk> {
  for await (const { data } of sseMessages(body, provider, (m) => m.data === "[DONE]")) {
    if (data === "[DONE]") return;
    let parsed: ChatCompletionChunk & { error?: { message?: string } };
    try {
      parsed = JSON.parse(data);
    } catch {
      throw badEvent(provider);
    }
    if (parsed.error) throw errorEvent(provider);
    yield parsed;
  }
}
