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

  return {
    name: cfg.name,
    type: "openai",
    async chat(req): Promise<UpstreamChatResult> {
      const res = await http.post(
        url("/chat/completions"),
        { ...headers, "x-request-id": req.requestId },
        req.body,
        req.signal,
      );
      if (req.body.stream !== true) return { kind: "json", body: await http.readJson<ChatCompletion>(res) };
      return { kind: "stream", chunks: await firstThenRest(chunks(res.body, cfg.name), cfg.name) };
    },
    async embeddings(req): Promise<EmbeddingResponse> {
      const res = await http.post(
        url("/embeddings"),
        { ...headers, "x-request-id": req.requestId },
        req.body,
        req.signal,
      );
      return http.readJson<EmbeddingResponse>(res);
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
