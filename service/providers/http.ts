/**
 * What every HTTP provider shares: one keep-alive undici Pool per provider, a JSON POST that turns network errors
 * and HTTP error statuses into classified ProviderFailures, and server-sent events read off a response body.
 */
import { Pool, errors as undiciErrors } from "undici";
import type { Dispatcher } from "undici";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { UpstreamError, UpstreamTimeoutError } from "../errors";
import { onCancel, type CancelSignal } from "../lib/cancel";
import { ProviderFailure, httpFailure, networkFailure } from "./errors";
import { registerSecret } from "../lib/secrets";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "../lib/body";

/**
 * What the proxy keeps of an upstream's answer: it is buffered (a whole JSON answer, an error body, the SSE line or
 * event being received), so an upstream that sends without end must not grow the process without end. A 600 MB
 * answer cost 1.4 GB of RSS. Over a cap the attempt fails as a bad answer (502 upstream_bad_response, the fallback
 * before the first byte was sent); an error body is only cut, its status still decides.
 */
export const MAX_ANSWER_BYTES = 32 * 1024 * 1024;
/** How much of an error status's body is read (for its message and code); the rest is dropped. */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;
/** The longest SSE line or event (its data lines together) the stream parser buffers, in characters. */
export const MAX_SSE_EVENT_CHARS = 8 * 1024 * 1024;

export interface HttpProviderSettings {
  name: string;
  baseUrl: string;
  timeoutMs: number;
  connections: number;
  /** The credentials sent (registered so that an upstream echoing them back is redacted; see lib/secrets.ts). */
  apiKey?: string | null;
  headers?: Record<string, string>;
  /** Query parameters sent on every request (Azure's `api-version`, a `key=`): an upstream quoting the URL echoes them. */
  query?: Record<string, string>;
  /** MAX_ANSWER_BYTES unless set (tests lower it). */
  maxAnswerBytes?: number;
  /** MAX_ERROR_BODY_BYTES unless set. */
  maxErrorBodyBytes?: number;
}

export type ResponseBody = Dispatcher.ResponseData["body"];

export interface HttpProvider {
  /** The base URL's path without a trailing slash (`/v1`), to prefix request paths with. */
  basePath: string;
  /** POST `body` as JSON; resolves with a 2xx response, throws a ProviderFailure otherwise. */
  post(
    path: string,
    /** Flat `[name, value, …]` list (see requestHeaders). */
    headers: string[],
    body: unknown,
    signal: CancelSignal,
  ): Promise<Dispatcher.ResponseData>;
  /**
   * POST `body` and read a JSON answer: resolves with the parsed 2xx body, throws a ProviderFailure otherwise (an
   * unreadable body is a retryable one). Straight on undici's dispatcher: no response stream is built for a body
   * that is read whole anyway.
   */
  postJson<T>(path: string, headers: string[], body: unknown, signal: CancelSignal): Promise<T>;
  close(): Promise<void>;
}

/**
 * A provider's fixed headers as the flat list undici takes, plus the request's id: a header object costs undici an
 * Object.keys per request, and spreading one and adding a key takes V8's slow path. A configured `x-request-id` is
 * dropped: the request's own wins.
 */
export function requestHeaders(fixed: Record<string, string>): (requestId: string) => string[] {
  const list = Object.entries(fixed)
    .filter(([name]) => name.toLowerCase() !== "x-request-id")
    .flat();
  return (requestId) => [...list, "x-request-id", requestId];
}

/**
 * The texts the latest parsed postJson answers were parsed from (see receivedText): a small ring of (value, text)
 * pairs matched by identity. A WeakMap did the same at ~1 % of a request's CPU (its write barrier on young
 * objects); the ring needs no barrier, and an entry is dropped when read, so it keeps at most RING answers alive
 * that nobody asked for (failed attempts), each until RING later answers have passed.
 */
const RING = 64;
const ringValues: Array<object | undefined> = new Array<object | undefined>(RING).fill(undefined);
const ringTexts: Array<string | undefined> = new Array<string | undefined>(RING).fill(undefined);
let ringNext = 0;

function rememberText(value: object, text: string): void {
  ringValues[ringNext] = value;
  ringTexts[ringNext] = text;
  ringNext = (ringNext + 1) % RING;
}

/**
 * The exact JSON text a value returned by `postJson` was parsed from, if it is one and was returned lately (within
 * the last RING answers of the process; the caller reads it on the next turns): the proxy can send an answer it does
 * not change as received instead of serializing it again. Read it before anything changes the value; it is handed
 * out once.
 */
export function receivedText(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  // Newest first: the answer asked about is nearly always the latest.
  for (let k = 1; k <= RING; k++) {
    const i = (ringNext - k + RING) % RING;
    if (ringValues[i] === value) {
      const text = ringTexts[i];
      ringValues[i] = undefined;
      ringTexts[i] = undefined;
      return text;
    }
  }
  return undefined;
}

export function createHttpProvider(cfg: HttpProviderSettings): HttpProvider {
  registerSecret(cfg.apiKey);
  for (const value of Object.values(cfg.headers ?? {})) registerSecret(value);
  // As written and as sent (URL-encoded: a base64 key's `+`, `/`, `=`).
  for (const value of Object.values(cfg.query ?? {})) {
    registerSecret(value);
    registerSecret(new URLSearchParams({ v: value }).toString().slice(2));
  }
  const maxAnswerBytes = cfg.maxAnswerBytes ?? MAX_ANSWER_BYTES;
  const maxErrorBodyBytes = cfg.maxErrorBodyBytes ?? MAX_ERROR_BODY_BYTES;
  const base = new URL(cfg.baseUrl);
  const pool = new Pool(base.origin, {
    connections: cfg.connections,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    headersTimeout: cfg.timeoutMs,
    bodyTimeout: cfg.timeoutMs,
  });
  return {
    basePath: base.pathname.replace(/\/+$/, ""),
    async post(path, headers, body, signal) {
      // The attempt timeout is the pool's headersTimeout (time to the response head) and bodyTimeout (longest gap
      // between body chunks): undici's own timers, much cheaper than a timer signal per request.
      // Serialized before the try: a body the proxy cannot serialize is its own fault, not the provider's (as a
      // "network failure" it was retried, fell back and put every target of a pool into cooldown).
      const text = JSON.stringify(body);
      let res: Dispatcher.ResponseData;
      try {
        res = await pool.request({ method: "POST", path, headers, body: text, signal });
      } catch (error) {
        throw networkFailure(cfg.name, error);
      }
      if (res.statusCode >= 300) {
        const text = await readPrefix(res.body, maxErrorBodyBytes);
        const retryAfter = res.headers["retry-after"];
        throw httpFailure(cfg.name, res.statusCode, text, typeof retryAfter === "string" ? retryAfter : null);
      }
      return res;
    },
    async postJson<T>(path: string, headers: string[], body: unknown, signal: CancelSignal): Promise<T> {
      const sent = JSON.stringify(body); // before the try, as in post
      let answer: RawAnswer;
      try {
        answer = await dispatchWhole(
          pool,
          { method: "POST", path, headers, body: sent },
          signal,
          maxAnswerBytes,
          maxErrorBodyBytes,
        );
      } catch (error) {
        if (error instanceof AnswerTooLarge) {
          throw badBody(cfg.name, new Error(`the body is larger than ${maxAnswerBytes} bytes`));
        }
        throw networkFailure(cfg.name, error);
      }
      if (answer.statusCode >= 300) {
        throw httpFailure(cfg.name, answer.statusCode, answer.body.toString("utf8"), answer.retryAfter);
      }
      const text = answer.body.toString("utf8");
      let value: T;
      try {
        value = JSON.parse(text) as T;
      } catch (error) {
        // Not the parser's message: it quotes the body ("Unexpected token … is not valid JSON"), which may hold anything.
        throw badBody(cfg.name, new Error(`the body is not JSON (${(error as Error).name})`));
      }
      // The proxy's walks over an answer (translation, PII, the cache's snapshot) recurse: an answer nested deeper
      // than any request may be is refused here, not a stack overflow (a 500) further on.
      if (nestsDeeperThan(value, MAX_JSON_DEPTH)) {
        throw badBody(cfg.name, new Error(`the body nests more than ${MAX_JSON_DEPTH} levels deep`));
      }
      if (typeof value === "object" && value !== null) rememberText(value, text);
      return value;
    },
    async close() {
      await pool.close();
    },
  };
}

interface RawAnswer {
  statusCode: number;
  retryAfter: string | null;
  body: Buffer;
}

/** The first `max` bytes of a body as text (an error status's: read for its message); the rest is dropped. */
async function readPrefix(body: ResponseBody, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      chunks.push(size + buf.length > max ? buf.subarray(0, max - size) : buf);
      size += buf.length;
      if (size >= max) break; // leaving the loop destroys the body (and its connection)
    }
  } catch {
    // a body cut short: what arrived is the text
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** A 2xx answer over its cap (dispatchWhole aborts the request with it). */
class AnswerTooLarge extends Error {}

/**
 * One request whose answer is read whole, on undici's handler interface: the status, Retry-After and the body's
 * bytes. Cancelling `signal` aborts the request (undici then reports a RequestAbortedError). A 2xx body over
 * `maxBytes` aborts it with AnswerTooLarge; an error status's body is cut at `maxErrorBytes` and resolved with.
 */
function dispatchWhole(
  pool: Pool,
  opts: Dispatcher.DispatchOptions,
  signal: CancelSignal,
  maxBytes: number,
  maxErrorBytes: number,
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    let statusCode = 0;
    let retryAfter: string | null = null;
    let chunks: Buffer[] = [];
    let size = 0;
    let off: (() => void) | null = null;
    let abortRequest: ((reason: Error) => void) | null = null;
    const handler: Dispatcher.DispatchHandler = {
      onConnect(abort) {
        off?.(); // called again only if undici re-dispatches the request; one listener at a time
        abortRequest = abort;
        chunks = [];
        size = 0;
        if (signal.aborted) abort(new undiciErrors.RequestAbortedError());
        else off = onCancel(signal, () => abort(new undiciErrors.RequestAbortedError()));
      },
      onHeaders(status, rawHeaders) {
        if (status < 200) return true; // 1xx: the real answer follows
        statusCode = status;
        if (status >= 400) retryAfter = headerValue(rawHeaders, "retry-after");
        return true;
      },
      onData(chunk) {
        const max = statusCode >= 300 ? maxErrorBytes : maxBytes;
        if (size + chunk.length <= max) {
          chunks.push(chunk);
          size += chunk.length;
          return true;
        }
        off?.();
        if (statusCode >= 300) {
          // Enough of an error body: answer with its start, drop the rest (and the connection).
          chunks.push(chunk.subarray(0, max - size));
          resolve({ statusCode, retryAfter, body: Buffer.concat(chunks) });
        }
        abortRequest?.(new AnswerTooLarge()); // rejects a 2xx's promise (onError); a settled one stays as it is
        return false;
      },
      onComplete() {
        off?.();
        resolve({ statusCode, retryAfter, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) });
      },
      onError(error) {
        off?.();
        reject(error);
      },
    };
    pool.dispatch(opts, handler);
  });
}

function headerValue(raw: Buffer[] | string[] | null, name: string): string | null {
  if (!raw) return null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i].toString().toLowerCase() === name) return raw[i + 1].toString();
  }
  return null;
}

/** A 2xx answer that is not JSON, or not the shape its API defines: retryable (the next attempt or fallback). */
export const badBody = (provider: string, cause?: unknown) =>
  new ProviderFailure(
    `${provider}: bad body`,
    true,
    new UpstreamError("The upstream provider sent an unreadable response.", "upstream_bad_response", {
      cause,
    }),
  );

export const badEvent = (provider: string) =>
  new ProviderFailure(
    `${provider}: bad event`,
    true,
    new UpstreamError("The upstream provider sent a malformed stream event.", "upstream_bad_response"),
  );

/**
 * A provider's error event mid-stream. An overload (Anthropic's `overloaded_error`) keeps status 529, which
 * /v1/messages reports as `overloaded_error`: Anthropic clients retry that one.
 */
export const errorEvent = (provider: string, type?: unknown) =>
  new ProviderFailure(
    `${provider}: error event`,
    true,
    new UpstreamError(
      type === "overloaded_error"
        ? "The upstream provider is overloaded."
        : "The upstream provider reported an error mid-stream.",
      "upstream_stream_error",
      type === "overloaded_error" ? { status: 529 } : {},
    ),
  );

/**
 * The events of an SSE body, up to and including the one `isLast` accepts; a body that ends before it throws (a cut
 * stream). After the last event the (empty) rest is drained so the keep-alive connection is reused; a stream left
 * early drops its connection. A line or event longer than `maxEventChars` is a bad event.
 */
export async function* sseMessages(
  body: ResponseBody,
  provider: string,
  isLast: (message: EventSourceMessage) => boolean,
  maxEventChars = MAX_SSE_EVENT_CHARS,
): AsyncGenerator<EventSourceMessage> {
  const queue: EventSourceMessage[] = [];
  let overflow = false;
  const parser = createParser({
    onEvent: (event) => queue.push(event),
    // The parser drops what it buffered and stops; the stream is given up (other parse errors are ignored, as before).
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") overflow = true;
    },
    maxBufferSize: maxEventChars,
  });
  const decoder = new TextDecoder();
  let sawLast = false;
  try {
    for await (const buf of body) {
      parser.feed(decoder.decode(buf as Buffer, { stream: true }));
      if (overflow) throw badEvent(provider);
      for (let i = 0; i < queue.length; i++) {
        if (isLast(queue[i])) {
          sawLast = true;
          yield queue[i];
          return;
        }
        yield queue[i];
      }
      queue.length = 0;
    }
    throw new ProviderFailure(
      `${provider}: stream cut`,
      true,
      new UpstreamError("The upstream stream ended unexpectedly.", "upstream_stream_error"),
    );
  } finally {
    if (sawLast) body.dump().catch(() => undefined);
    else body.destroy();
  }
}

/**
 * Waits for the first item of a stream (until it arrives, a failure is still a clean fallback), then returns the
 * whole stream; failures after that become client errors (the stream is committed).
 */
export async function firstThenRest<T>(
  items: AsyncGenerator<T>,
  provider: string,
): Promise<AsyncGenerator<T>> {
  let first: IteratorResult<T>;
  try {
    first = await items.next();
  } catch (error) {
    if (error instanceof ProviderFailure) throw error;
    throw networkFailure(provider, error);
  }
  // Not one event before the end (`data: [DONE]` alone): no answer at all, and nothing sent yet — the next attempt.
  if (first.done) {
    throw new ProviderFailure(
      `${provider}: empty stream`,
      true,
      new UpstreamError("The upstream provider sent an empty stream.", "upstream_bad_response"),
    );
  }
  return prepend(first, items);
}

async function* prepend<T>(first: IteratorResult<T>, rest: AsyncGenerator<T>): AsyncGenerator<T> {
  try {
    if (first.done) return;
    yield first.value;
    for (;;) {
      let next: IteratorResult<T>;
      try {
        next = await rest.next();
      } catch (error) {
        if (error instanceof ProviderFailure) throw error.clientError;
        // The provider went silent mid-stream for longer than the attempt timeout (undici's bodyTimeout).
        if (error instanceof undiciErrors.BodyTimeoutError) {
          throw new UpstreamTimeoutError("The upstream stream went silent for longer than its timeout.");
        }
        throw new UpstreamError("The upstream stream failed.", "upstream_stream_error", { cause: error });
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await rest.return(undefined);
  }
}
