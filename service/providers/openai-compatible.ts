/**
 * Any OpenAI-compatible API (OpenAI, Azure OpenAI, vLLM, Ollama, LM Studio …) over one keep-alive undici Pool per
 * provider. A streaming call resolves only once the first event has arrived, so the caller can still fall back
 * before anything reached the client; after that, an idle gap longer than the timeout ends the stream with an error.
 */
import type { ProviderConfig } from "../config";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "../lib/body";
import { isObject } from "../lib/input-check";
import type { Provider, UpstreamChatResult } from "../ports";
import type { ChatCompletion, ChatCompletionChunk, EmbeddingResponse } from "../types";
import {
  badBody,
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
        if (!isCompletion(body)) throw badBody(cfg.name);
        return { kind: "json", body };
      }
      const res = await http.post(url("/chat/completions"), withId(req.requestId), req.body, req.signal);
      return { kind: "stream", chunks: await firstThenRest(chunks(res.body, cfg.name), cfg.name) };
    },
    async embeddings(req): Promise<EmbeddingResponse> {
      const body = await http.postJson<EmbeddingResponse>(
        url("/embeddings"),
        withId(req.requestId),
        req.body,
        req.signal,
      );
      if (!isObject(body) || !Array.isArray(body.data)) throw badBody(cfg.name);
      return body;
    },
    close: () => http.close(),
  };
}

/** Absent or null, else an object. */
const isOptionalObject = (v: unknown) => v === undefined || v === null || isObject(v);
/** Absent or null, else a list of objects whose `function` is absent, null or an object. */
const isOptionalToolCalls = (v: unknown) =>
  v === undefined ||
  v === null ||
  (Array.isArray(v) && v.every((t) => isObject(t) && isOptionalObject(t.function)));
/** A message or a delta: absent or null, else an object with well-formed tool calls. */
const isOptionalTurn = (v: unknown) =>
  v === undefined || v === null || (isObject(v) && isOptionalToolCalls(v.tool_calls));

/**
 * The shape the proxy's stages read of a chat completion: an object whose `choices` is a list of objects, each
 * `message` absent, null or an object (its `tool_calls` a list of objects), and `usage` absent, null or an object. A 200 carrying `null`, an `{"error":…}`
 * body or a list was a 500 in the stages, or passed on (and cached) as a success.
 */
function isCompletion(body: unknown): body is ChatCompletion {
  return (
    isObject(body) &&
    Array.isArray(body.choices) &&
    body.choices.every((c) => isObject(c) && isOptionalTurn(c.message)) &&
    isOptionalObject(body.usage)
  );
}

/**
 * The same for a stream chunk: an object; `choices` a list of objects whose `delta` is absent, null or an object
 * (a usage-only chunk without `choices` gets an empty list, as OpenAI sends it); `usage` absent, null or an object.
 */
function isChunk(chunk: unknown): chunk is ChatCompletionChunk {
  if (!isObject(chunk) || !isOptionalObject(chunk.usage)) return false;
  if (chunk.choices === undefined) chunk.choices = [];
  return Array.isArray(chunk.choices) && chunk.choices.every((c) => isObject(c) && isOptionalTurn(c.delta));
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
    // As deep as no chunk is: the proxy's walks (PII restore, the cache's copy, serializing) would overflow the stack.
    if (nestsDeeperThan(parsed, MAX_JSON_DEPTH)) throw badEvent(provider);
    if (isObject(parsed) && parsed.error) throw errorEvent(provider);
    if (!isChunk(parsed)) throw badEvent(provider);
    yield parsed;
  }
}
