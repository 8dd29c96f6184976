/**
 * Random hex digits cut from a pooled CSPRNG block: one `randomBytes` call per 8,192 digits instead of one per id.
 * Every digit is handed out once. For ids that must be unguessable (request ids, PII placeholders).
 */
import crypto from "node:crypto";

const POOL_BYTES = 4096;
let pool = "";
let offset = 0;

/** `n` random hex digits (lowercase). */
export function randomHex(n: number): string {
  if (offset + n > pool.length) {
    pool = crypto.randomBytes(POOL_BYTES).toString("hex");
    offset = 0;
  }
  const out = pool.slice(offset, offset + n);
  offset += n;
  return out;
}
