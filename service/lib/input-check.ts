/**
 * Type checks for the client values a request translation reads (/v1/messages, /v1/responses): a wrong type is a
 * 400 naming the field and what it must be — never a TypeError (a 500) or "[object Object]" sent on as text.
 */
import { InvalidRequestError } from "../errors";

export type Json = Record<string, unknown>;

export const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** What a value is, for an error message: "a number", "an array", "null". */
export function kind(v: unknown): string {
  if (v === null) return "null";
  if (v === "") return "an empty string";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** `<param> must be <expected>, not <what it is>.` (or `is missing`), code `invalid_value` unless given. */
export const invalid = (param: string, expected: string, got: unknown, code = "invalid_value") =>
  new InvalidRequestError(
    got === undefined
      ? `${param} is missing: it must be ${expected}.`
      : `${param} must be ${expected}, not ${kind(got)}.`,
    code,
    param,
  );

/** A string field that may be absent or null ("" then). */
export function optionalString(v: unknown, param: string): string {
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw invalid(param, "a string", v);
  return v;
}

/** A field that may be absent or null, else must be an object. */
export function optionalObject(v: unknown, param: string): Json | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw invalid(param, "an object", v);
  return v;
}

/** A field that may be absent or null, else must be a boolean. */
export function checkOptionalBoolean(v: unknown, param: string): void {
  if (v !== undefined && v !== null && typeof v !== "boolean") throw invalid(param, "a boolean", v);
}
