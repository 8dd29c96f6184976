/**
 * The writer. On the way out it turns `ctx.state.result` into the HTTP response: JSON, or Server-Sent Events with
 * `chat.completion.chunk` frames and `data: [DONE]`. The usage chunk is passed on only when the client asked for it.
 * A failure after the first byte cannot change the status any more: the stream ends with an error event
 * (`data: {"error": {...}}`) and the request is recorded as an error. On POST /v1/messages the same result is
 * written as an Anthropic Message or Messages event stream (lib/anthropic-messages.ts), on POST /v1/responses as a
 * Response or Responses event stream (lib/openai-responses.ts).
 */
import type { ServerResponse } from "node:http";
import type { Middleware, ParameterizedContext } from "koa";
import { toProxyError, type ProxyError } from "../errors";
import type { ProxyResult, ProxyState } from "../state";
import { chatToMessage, createMessageStream, messagesErrorEvent } from "../lib/anthropic-messages";
import { chatToResponse, createResponseEventStream } from "../lib/openai-responses";
import type { ChatCompletion, ChatCompletionChunk } from "../types";
import type { UsageRow } from "../ports";
import type { Logger } from "pino";
import { isAnthropicRoute, promptTokensEstimate } from "./request-context";

/** One wire format's framing of a chat result stream. */
interface StreamWire {
  push(chunk: ChatCompletionChunk): string[];
  end(): string[];
  /** The frame that ends a stream which failed after its first byte. */
  error(e: ProxyError): string;
}

/** OpenAI chat: `data: <chunk>` frames and `data: [DONE]`; the usage chunk only when the client asked for it. */
function chatWire(includeUsage: boolean): StreamWire {
  return {
    push(chunk) {
      const frame = forClient(chunk, includeUsage);
      return frame ? [`data: ${JSON.stringify(frame)}\n\n`] : [];
    },
    end: () => ["data: [DONE]\n\n"],
    error: (e) => `data: ${JSON.stringify(e.toBody())}\n\n`,
  };
}

/** The wire format of the route: chat completions, Anthropic Messages or OpenAI Responses. */
function wireFor(ctx: ParameterizedContext<ProxyState>, includeUsage: boolean): StreamWire {
  const model = ctx.state.usage.requestedModel ?? "";
  if (ctx.state.route === "messages") {
    // message_start comes before the provider's usage: the tokenizer's count when a limit needed one, else the
    // estimate an answer without usage is charged (a quarter of the body's characters), never a 0 that a client
    // tracking its context window would read as an empty prompt. message_delta carries the provider's count.
    const events = createMessageStream(model, promptTokensEstimate(ctx));
    return { push: events.push, end: events.end, error: messagesErrorEvent };
  }
  if (ctx.state.route === "responses")
    return createResponseEventStream(model, new Set(ctx.state.customTools), ctx.state.responseEcho);
  return chatWire(includeUsage);
}

/**
 * The JSON answer's text in the route's wire format. A chat or embeddings body is sent as is: as the text a stage
 * kept for it (an untouched upstream answer, a cache hit) when there is one.
 */
function jsonText(
  ctx: ParameterizedContext<ProxyState>,
  result: Extract<ProxyResult, { kind: "json" }>,
): string {
  const model = ctx.state.usage.requestedModel ?? "";
  const body = result.body as ChatCompletion;
  if (ctx.state.route === "messages") return JSON.stringify(chatToMessage(body, model));
  if (ctx.state.route === "responses")
    return JSON.stringify(
      chatToResponse(body, model, new Set(ctx.state.customTools), ctx.state.responseEcho),
    );
  return result.text ?? JSON.stringify(result.body);
}

async function* frames(
  chunks: AsyncIterable<ChatCompletionChunk>,
  wire: StreamWire,
  usage: UsageRow,
  log: Logger,
  clientGone: () => boolean,
): AsyncGenerator<string> {
  try {
    for await (const chunk of chunks) yield* wire.push(chunk);
    yield* wire.end();
  } catch (error) {
    // The upstream call was cancelled because the client left: the row already says client_closed_request.
    if (clientGone()) return;
    const e = toProxyError(error);
    usage.status = e.status;
    usage.errorCode = e.code;
    log.warn({ status: e.status, code: e.code, err: e.status >= 500 ? error : undefined }, "stream failed");
    yield wire.error(e);
  }
}

/** Drop the usage-only chunk (and the usage field) unless the client asked for usage. */
function forClient(chunk: ChatCompletionChunk, includeUsage: boolean): ChatCompletionChunk | null {
  if (includeUsage || chunk.usage == null) return chunk;
  if (chunk.choices.length === 0) return null;
  const { usage: _usage, ...rest } = chunk;
  return rest as ChatCompletionChunk;
}

/** A response head as a flat header list: the type, `own` headers, the request id, and what other stages added. */
function head(ctx: ParameterizedContext<ProxyState>, type: string, own: string[]): string[] {
  return [
    "content-type",
    type,
    ...own,
    "x-request-id",
    ctx.state.requestId,
    // Anthropic's SDKs read the request id from `request-id` (error.requestID, message._request_id).
    ...(isAnthropicRoute(ctx.state.route) ? ["request-id", ctx.state.requestId] : []),
    ...(ctx.state.responseHeaders ?? []),
  ];
}

export function createRespond(): Middleware<ProxyState> {
  return async function respond(ctx, next) {
    await next();
    const result = ctx.state.result;
    if (!result) return;
    // The answer is written here, not by Koa: its head in one writeHead call with a header list. Each header set
    // one by one on a fresh response (what ctx.set and Koa's own writer do) goes through V8's slow path for
    // Node's null-prototype header map; for the proxy's most common response that is a measurable share of its CPU.
    // Stages' own headers (x-ratelimit-*, x-cache) come from ctx.state.responseHeaders.
    const res = ctx.res;
    if (result.kind === "json") {
      const text = jsonText(ctx, result);
      ctx.status = 200;
      ctx.respond = false;
      res.writeHead(
        200,
        head(ctx, "application/json; charset=utf-8", ["content-length", String(Buffer.byteLength(text))]),
      );
      res.end(text);
      return;
    }
    const wire = wireFor(ctx, result.includeUsage);
    ctx.status = 200;
    ctx.respond = false;
    ctx.req.socket.setNoDelay(true);
    // Frames go straight to the socket (the head goes out with the first one): no stream adapter between the
    // upstream's first event and the client, which is what time-to-first-byte measures.
    res.writeHead(
      200,
      head(ctx, "text/event-stream; charset=utf-8", ["cache-control", "no-cache", "x-accel-buffering", "no"]),
    );
    const clientGone = () => res.destroyed && !res.writableFinished;
    await writeFrames(res, frames(result.chunks, wire, ctx.state.usage, ctx.state.log, clientGone));
  };
}

/** Write each frame, waiting for the socket to drain when it is full; stops (and so cancels upstream) when the client leaves. */
async function writeFrames(res: ServerResponse, frames: AsyncGenerator<string>): Promise<void> {
  for await (const frame of frames) {
    if (res.destroyed) return; // leaving the loop ends the generators, which releases the upstream connection
    if (!res.write(frame)) await drainedOrClosed(res);
  }
  if (!res.destroyed) res.end();
}

function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
