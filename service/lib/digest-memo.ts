/**
 * A bounded memo of an expensive function of a text, keyed by the text's SHA-1: what it keeps is the digest and the
 * result, never the text (prompts, phone numbers). For work that costs far more than hashing (~2 µs per 2 000
 * characters) and whose inputs repeat, as a conversation's history does in every turn.
 */
import crypto from "node:crypto";
import { LRUCache } from "lru-cache";

export interface DigestMemo<T extends NonNullable<unknown>> {
  /** `compute(text)`, or its remembered result; `salt` separates variants of the function (e.g. an encoding). */
  get(text: string, compute: (text: string) => T, salt?: string): T;
  clear(): void;
}

export function digestMemo<T extends NonNullable<unknown>>(max: number): DigestMemo<T> {
  const cache = new LRUCache<string, T>({ max });
  return {
    get(text, compute, salt = "") {
      const key = salt + crypto.hash("sha1", text, "base64");
      let value = cache.get(key);
      if (value === undefined) {
        value = compute(text);
        cache.set(key, value);
      }
      return value;
    },
    clear: () => cache.clear(),
  };
}
