/**
 * The writer. On the way out it turns `ctx.state.result` into the HTTP response: JSON, or Server-Sent Events with
 * `chat.completion.chunk` frames and `data: [DONE]`. The usage chunk is passed on only when the client asked for it.
 * A failure after the first byte cannot change the status any more: the stream ends with an error event
 * (`data: {"error": {...}}`) and the request is recorded as an error.
 */
import { Readable } from "node:stream";
import type { Middleware } from "koa";
import { toProxyError } from "../errors";
import type { ProxyResult, ProxyState } from "../state";
import type { ChatCompletionChunk } from "../types";
import type { UsageRow } from "../ports";
import type { Logger } from "pino";

async function* sseFrames(
  result: Extract<ProxyResult, { kind: "stream" }>,
  usage: UsageRow,
  log: Logger,
): AsyncGenerator<string> {
  try {
    for await (const chunk of result.chunks) {
      const frame = forClient(chunk, result.includeUsage);
      if (frame) yield `data: ${JSON.stringify(frame)}\n\n`;
    }
    yield "data: [DONE]\n\n";
  } catch (error) {
    const e = toProxyError(error);
    usage.status = e.status;
    usage.errorCode = e.code;
    log.warn({ status: e.status, code: e.code, err: e.status >= 500 ? error : undefined }, "stream failed");
    yield `data: ${JSON.stringify(e.toBody())}\n\n`;
  }
}

/** Drop the usage-only chunk (and the usage field) unless the client asked for usage. */
function forClient(chunk: ChatCompletionChunk, includeUsage: boolean): ChatCompletionChunk | null {
  if (includeUsage || chunk.usage == null) return chunk;
  if (chunk.choices.length === 0) return null;
  const { usage: _usage, ...rest } = chunk;
  return rest as ChatCompletionChunk;
}

export function createRespond(): Middleware<ProxyState> {
  return async function respond(ctx, next) {
    await next();
    const result = ctx.state.result;
    if (!result) return;
    if (result.kind === "json") {
      ctx.status = 200;
      ctx.body = result.body;
      return;
    }
    ctx.status = 200;
    ctx.set("Content-Type", "text/event-stream; charset=utf-8");
    ctx.set("Cache-Control", "no-cache");
    ctx.set("X-Accel-Buffering", "no");
    ctx.req.socket.setNoDelay(true);
    ctx.body = Readable.from(sseFrames(result, ctx.state.usage, ctx.state.log), { objectMode: false });
  };
}
