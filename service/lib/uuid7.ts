/**
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Request ids key the usage table; with
 * time-ordered keys its primary-key index grows at its right edge, like the time series it is, instead of every
 * insert landing on a random page of an index that soon outgrows memory (v4), which would multiply PostgreSQL's
 * page reads and WAL as the table reaches billions of rows.
 */
import crypto from "node:crypto";

let stampMs = -1;
let stamp = "";

/**
 * A v4 uuid (`crypto.randomUUID`, from Node's pooled entropy) with its first 48 bits replaced by the time and its
 * version nibble by 7: the 74 random bits v7 keeps are v4's own (rand_a, the variant, rand_b).
 */
export function uuidv7(now: number = Date.now()): string {
  const ms = Math.floor(now);
  if (ms !== stampMs) {
    const ts = ms.toString(16).padStart(12, "0").slice(-12);
    stampMs = ms;
    stamp = `${ts.slice(0, 8)}-${ts.slice(8)}-7`;
  }
  // v4: xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx; from index 15 on it is rand_a, the variant digit and rand_b.
  return stamp + crypto.randomUUID().slice(15);
}

/** The millisecond timestamp a UUIDv7 carries. */
export function uuidv7Time(id: string): number {
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}
