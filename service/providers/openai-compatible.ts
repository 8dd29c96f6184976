/**
 * Any OpenAI-compatible API (OpenAI, Azure OpenAI, vLLM, Ollama, LM Studio …) over one keep-alive undici Pool per
 * provider. A streaming call resolves only once the first event has arrived, so the caller can still fall back
 * before anything reached the client; after that, an idle gap longer than the timeout ends the stream with an error.
 */
import { Pool, errors as undiciErrors } from "undici";
import type { Dispatcher } from "undici";
import { createParser } from "eventsource-parser";
import type { ProviderConfig } from "../config";
import { UpstreamError } from "../errors";
import type { Provider, UpstreamChatRequest, UpstreamChatResult } from "../ports";
import type { ChatCompletion, ChatCompletionChunk, EmbeddingResponse } from "../types";
import { ProviderFailure, httpFailure, networkFailure } from "./errors";

type OpenAIConfig = Extract<ProviderConfig, { type: "openai" }>;

export function createOpenAICompatibleProvider(cfg: OpenAIConfig): Provider {
  const base = new URL(cfg.baseUrl);
  const pool = new Pool(base.origin, {
    connections: cfg.connections,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    headersTimeout: cfg.timeoutMs,
    bodyTimeout: cfg.timeoutMs,
  });
  const basePath = base.pathname.replace(/\/+$/, "");
  const query = new URLSearchParams(cfg.query).toString();
  const headers: Record<string, string> = { "content-type": "application/json", ...cfg.headers };
  if (cfg.apiKey) {
    if (cfg.authHeader === "api-key") headers["api-key"] = cfg.apiKey;
    else headers.authorization = `Bearer ${cfg.apiKey}`;
  }

  async function post(
    path: string,
    body: unknown,
    req: UpstreamChatRequest,
  ): Promise<Dispatcher.ResponseData> {
    // The attempt timeout is the pool's headersTimeout (time to the response head) and bodyTimeout (longest gap
    // between body chunks): undici's own timers, much cheaper than a timer signal per request.
    let res: Dispatcher.ResponseData;
    try {
      res = await pool.request({
        method: "POST",
        path: `${basePath}${path}${query ? `?${query}` : ""}`,
        headers: { ...headers, "x-request-id": req.requestId },
        body: JSON.stringify(body),
        signal: req.signal,
      });
    } catch (error) {
      throw networkFailure(cfg.name, error, error instanceof undiciErrors.HeadersTimeoutError);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text().catch(() => "");
      const retryAfter = res.headers["retry-after"];
      throw httpFailure(cfg.name, res.statusCode, text, typeof retryAfter === "string" ? retryAfter : null);
    }
    return res;
  }

  async function readJson<T>(res: Dispatcher.ResponseData): Promise<T> {
    try {
      return (await res.body.json()) as T;
    } catch (error) {
      throw new ProviderFailure(
        `${cfg.name}: bad body`,
        true,
        new UpstreamError("The upstream provider sent an unreadable response.", "upstream_bad_response", {
          cause: error,
        }),
      );
    }
  }

  return {
    name: cfg.name,
    type: "openai",
    async chat(req): Promise<UpstreamChatResult> {
      const res = await post("/chat/completions", req.body, req);
      if (req.body.stream !== true) return { kind: "json", body: await readJson<ChatCompletion>(res) };
      const events = sseEvents(res.body, cfg.name);
      // Wait for the first event: until it arrives, a failure is still a clean fallback.
      let first: IteratorResult<ChatCompletionChunk>;
      try {
        first = await events.next();
      } catch (error) {
        if (error instanceof ProviderFailure) throw error;
        throw networkFailure(cfg.name, error, error instanceof undiciErrors.BodyTimeoutError);
      }
      return { kind: "stream", chunks: prepend(first, events) };
    },
    async embeddings(req): Promise<EmbeddingResponse> {
      const res = await post("/embeddings", req.body, req);
      return readJson<EmbeddingResponse>(res);
    },
    async close() {
      await pool.close();
    },
  };
}

async function* prepend(
  first: IteratorResult<ChatCompletionChunk>,
  rest: AsyncGenerator<ChatCompletionChunk>,
): AsyncGenerator<ChatCompletionChunk> {
  try {
    if (first.done) return;
    yield first.value;
    for (;;) {
      let next: IteratorResult<ChatCompletionChunk>;
      try {
        next = await rest.next();
      } catch (error) {
        if (error instanceof ProviderFailure) throw error.clientError;
        throw new UpstreamError("The upstream stream failed.", "upstream_stream_error", { cause: error });
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await rest.return(undefined);
  }
}

/** Parse an SSE body into chunk objects; ends at `data: [DONE]`; an `error` event or a cut stream throws. */
async function* sseEvents(
  body: Dispatcher.ResponseData["body"],
  provider: string,
): AsyncGenerator<ChatCompletionChunk> {
  const queue: string[] = [];
  const parser = createParser({ onEvent: (event) => queue.push(event.data) });
  const decoder = new TextDecoder();
  let sawDone = false;
  try {
    for await (const buf of body) {
      parser.feed(decoder.decode(buf as Buffer, { stream: true }));
      for (let i = 0; i < queue.length; i++) {
        const data = queue[i];
        if (data === "[DONE]") {
          sawDone = true;
          return;
        }
        let parsed: ChatCompletionChunk & { error?: { message?: string } };
        try {
          parsed = JSON.parse(data);
        } catch {
          throw new ProviderFailure(
            `${provider}: bad event`,
            true,
            new UpstreamError(
              "The upstream provider sent a malformed stream event.",
              "upstream_bad_response",
            ),
          );
        }
        if (parsed.error) {
          throw new ProviderFailure(
            `${provider}: error event`,
            true,
            new UpstreamError("The upstream provider reported an error mid-stream.", "upstream_stream_error"),
          );
        }
        yield parsed;
      }
      queue.length = 0;
    }
    if (!sawDone) {
      throw new ProviderFailure(
        `${provider}: stream cut`,
        true,
        new UpstreamError("The upstream stream ended unexpectedly.", "upstream_stream_error"),
      );
    }
  } finally {
    // After [DONE] drain the (empty) rest so the keep-alive connection is reused; otherwise drop it.
    if (sawDone) body.dump().catch(() => undefined);
    else body.destroy();
  }
}
