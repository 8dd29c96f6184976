/**
 * Bounded JSON body reading: over the limit → 413, malformed or nested deeper than MAX_JSON_DEPTH → 400, in the
 * OpenAI error shape.
 * Read straight off the request stream (UTF-8; a multi-byte character split across packets is joined before
 * decoding): this runs on every API request, so it does no more than that.
 */
import type { IncomingMessage } from "node:http";
import type { Context } from "koa";
import { InvalidRequestError, PayloadTooLargeError } from "../errors";

class TooLarge extends Error {}

/**
 * How deep a request body's arrays and objects may nest (the top level is 1). JSON.parse takes any depth, but the
 * proxy's own walks over a body (the cache key, PII, serializing it for the upstream) recurse, and a 10 KB body of
 * 5,000 nested arrays overflowed the stack: a 500, or a 502 "upstream unreachable" after trying every fallback.
 * Real bodies stay far below this: OpenAI's structured outputs allow 10 levels of schema nesting (about 20 of JSON).
 */
export const MAX_JSON_DEPTH = 128;

/** True if `value` holds arrays or objects nested more than `max` levels deep (counting `value` itself). */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (max <= 0) return true;
  if (Array.isArray(value)) {
    for (const item of value as unknown[]) {
      if (typeof item === "object" && item !== null && nestsDeeperThan(item, max - 1)) return true;
    }
    return false;
  }
  const record = value as Record<string, unknown>;
  for (const key in record) {
    const item = record[key];
    if (typeof item === "object" && item !== null && nestsDeeperThan(item, max - 1)) return true;
  }
  return false;
}

function readText(req: IncomingMessage, limitBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) {
        // Stop keeping what we will refuse; the stream keeps flowing into nothing until the connection closes.
        cleanup();
        reject(new TooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(
        chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks, size).toString("utf8"),
      );
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    // Closed before the end: the client went away mid-body.
    const onClose = () => onError(new Error("request aborted"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}

export async function readJsonBody(ctx: Context, limitBytes: number): Promise<unknown> {
  const declared = Number(ctx.get("content-length") || NaN);
  if (declared > limitBytes) {
    // Don't read what we will refuse; let the connection drop the rest.
    ctx.set("Connection", "close");
    throw new PayloadTooLargeError(limitBytes);
  }
  let text: string;
  try {
    text = await readText(ctx.req, limitBytes);
  } catch (error) {
    if (error instanceof TooLarge) {
      ctx.set("Connection", "close");
      throw new PayloadTooLargeError(limitBytes);
    }
    throw new InvalidRequestError("Could not read the request body.", "invalid_body");
  }
  if (!text.trim())
    throw new InvalidRequestError("The request body is empty; expected JSON.", "invalid_json");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new InvalidRequestError(
      `We could not parse the JSON body of your request: ${(error as Error).message}.`,
      "invalid_json",
    );
  }
  if (nestsDeeperThan(value, MAX_JSON_DEPTH)) {
    throw new InvalidRequestError(
      `The JSON body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep; flatten it.`,
      "invalid_json",
    );
  }
  return value;
}
