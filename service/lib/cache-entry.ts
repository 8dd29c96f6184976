/**
 * A response-cache entry as text, for both stores (Redis and the in-process LRU). A JSON entry whose body text is
 * known (the upstream's answer as received) is written around that text instead of serializing the body again, and
 * a hit hands the body's text back beside the parsed body, so the writer sends it without serializing it again.
 */
import type { CachedResponse } from "../ports";

const JSON_HEAD = '{"kind":"json","body":';

export function entryText(value: CachedResponse): string {
  if (value.kind === "json" && value.bodyText !== undefined) return `${JSON_HEAD}${value.bodyText}}`;
  return JSON.stringify({ kind: value.kind, body: value.body });
}

/** The entry; throws on text that is not JSON. */
export function parseEntry(text: string): CachedResponse {
  const value = JSON.parse(text) as CachedResponse;
  // Written by entryText (or by JSON.stringify of `{kind, body}` before it): the body is everything between the head
  // and the final brace.
  if (value.kind === "json" && text.startsWith(JSON_HEAD) && text.endsWith("}")) {
    value.bodyText = text.slice(JSON_HEAD.length, -1);
  }
  return value;
}
