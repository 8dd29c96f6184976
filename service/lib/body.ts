/**
 * Bounded JSON body reading: over the limit → 413, malformed → 400, both in the OpenAI error shape.
 * Read straight off the request stream (UTF-8; a multi-byte character split across packets is joined before
 * decoding): this runs on every API request, so it does no more than that.
 */
import type { IncomingMessage } from "node:http";
import type { Context } from "koa";
import { InvalidRequestError, PayloadTooLargeError } from "../errors";

class TooLarge extends Error {}

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
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InvalidRequestError(
      `We could not parse the JSON body of your request: ${(error as Error).message}.`,
      "invalid_json",
    );
  }
}
