/**
 * Bounded JSON body reading: over the limit → 413, malformed → 400, both in the OpenAI error shape.
 */
import type { Context } from "koa";
import getRawBody from "raw-body";
import { InvalidRequestError, PayloadTooLargeError } from "../errors";

export async function readJsonBody(ctx: Context, limitBytes: number): Promise<unknown> {
  const declared = Number(ctx.get("content-length") || NaN);
  if (declared > limitBytes) {
    // Don't read what we will refuse; let the connection drop the rest.
    ctx.set("Connection", "close");
    throw new PayloadTooLargeError(limitBytes);
  }
  let text: string;
  try {
    text = await getRawBody(ctx.req, { limit: limitBytes, encoding: "utf8" });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === "entity.too.large") {
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
