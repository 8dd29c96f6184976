/**
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Request ids key the usage table; with
 * time-ordered keys its primary-key index grows at its right edge, like the time series it is, instead of every
 * insert landing on a random page of an index that soon outgrows memory (v4), which would multiply PostgreSQL's
 * page reads and WAL as the table reaches billions of rows.
 */
import { randomHex } from "./random-hex";

const HEX_PER_ID = 19; // 3 (rand_a) + 1 (variant nibble source) + 3 + 12
const VARIANT = ["8", "9", "a", "b"];

export function uuidv7(now: number = Date.now()): string {
  const ts = Math.floor(now).toString(16).padStart(12, "0").slice(-12);
  const r = randomHex(HEX_PER_ID);
  return `${ts.slice(0, 8)}-${ts.slice(8)}-7${r.slice(0, 3)}-${VARIANT[parseInt(r[3], 16) & 3]}${r.slice(4, 7)}-${r.slice(7)}`;
}

/** The millisecond timestamp a UUIDv7 carries. */
export function uuidv7Time(id: string): number {
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}
