/**
 * Response cache on Redis: one string per entry, `SET … PX ttl`, compactly encoded (one tag byte, then JSON — or
 * raw-deflated JSON above 1 KiB, which shrinks repetitive stream chunks several times over). Entries are single
 * keys, so they spread over a Redis Cluster by themselves.
 *
 * Redis unavailable (error, timeout, disconnected): a read is a miss and a write is skipped — the request is still
 * served; the failure is counted and logged at most once per 10 s. After a failure the cache is left alone for
 * `retryAfterMs`, so during an outage (a stalled server answers nothing until the deadline) only one request a
 * second waits for it instead of every request.
 */
import zlib from "node:zlib";
import type { Logger } from "pino";
import { Counter } from "prom-client";
import type { Config } from "../config";
import { registry } from "../metrics";
import type { CachedResponse, ResponseCache } from "../ports";
import { MemoryResponseCache } from "./memory-cache";
import { entryText, parseEntry } from "../lib/cache-entry";
import { acquireRedis, withDeadline, type RedisClient } from "./redis";

export const cacheErrors = new Counter({
  name: "llmproxy_cache_errors_total",
  help: "Response-cache Redis calls that failed or timed out (served as a miss / not stored), by operation.",
  labelNames: ["operation"] as const,
  registers: [registry],
});

const PLAIN = 0x6a; // "j"
const DEFLATED = 0x7a; // "z"
const COMPRESS_ABOVE = 1024;

export function encodeEntry(value: CachedResponse): Buffer {
  const json = Buffer.from(entryText(value));
  if (json.length <= COMPRESS_ABOVE) return Buffer.concat([Buffer.of(PLAIN), json]);
  return Buffer.concat([Buffer.of(DEFLATED), zlib.deflateRawSync(json, { level: 6 })]);
}

export function decodeEntry(buf: Buffer): CachedResponse | null {
  if (buf.length === 0) return null;
  const body = buf.subarray(1);
  if (buf[0] === PLAIN) return parseEntry(body.toString("utf8"));
  if (buf[0] === DEFLATED) return parseEntry(zlib.inflateRawSync(body).toString("utf8"));
  return null;
}

export interface RedisCacheOptions {
  /** A standalone or a Cluster client (see redis.ts). */
  client: RedisClient;
  log: Logger;
  /** Key prefix. Default "llmproxy:c:". */
  prefix?: string;
  /** Entries whose encoding is larger are not stored, in bytes. Default 1 MiB. */
  maxEntryBytes?: number;
  /** Deadline of one read or write, in ms (see withDeadline); past it the read is a miss. Default 250. */
  timeoutMs?: number;
  /** After a failed call, how long reads are misses and writes skipped without trying Redis, in ms. Default 1000. */
  retryAfterMs?: number;
}

export class RedisResponseCache implements ResponseCache {
  private readonly client: RedisClient;
  private readonly log: Logger;
  private readonly prefix: string;
  private readonly maxEntryBytes: number;
  private readonly timeoutMs: number;
  private readonly retryAfterMs: number;
  private lastWarned = 0;
  /** Until when calls skip Redis (after a failure). */
  private skipUntil = 0;

  constructor(opts: RedisCacheOptions) {
    this.client = opts.client;
    this.log = opts.log.child({ component: "response-cache" });
    this.prefix = opts.prefix ?? "llmproxy:c:";
    this.maxEntryBytes = opts.maxEntryBytes ?? 1024 * 1024;
    this.timeoutMs = opts.timeoutMs ?? 250;
    this.retryAfterMs = opts.retryAfterMs ?? 1000;
  }

  /** Whether to leave Redis alone for now (a recent failure). */
  private resting(): boolean {
    return Date.now() < this.skipUntil;
  }

  private failed(operation: "get" | "set", error: unknown): void {
    cacheErrors.inc({ operation });
    const now = Date.now();
    this.skipUntil = now + this.retryAfterMs;
    if (now - this.lastWarned < 10_000) return;
    this.lastWarned = now;
    this.log.warn(
      { err: (error as Error).message, operation },
      "response cache: Redis unavailable, serving without cache",
    );
  }

  async get(key: string): Promise<CachedResponse | null> {
    if (this.resting()) return null;
    let buf: Buffer | null;
    try {
      buf = await withDeadline(this.client.getBuffer(this.prefix + key), this.timeoutMs, "response cache");
    } catch (error) {
      this.failed("get", error);
      return null;
    }
    if (!buf) return null;
    try {
      return decodeEntry(buf);
    } catch {
      return null;
    }
  }

  async set(key: string, value: CachedResponse, ttlSeconds: number): Promise<void> {
    if (this.resting()) return;
    const buf = encodeEntry(value);
    if (buf.length > this.maxEntryBytes) return;
    try {
      await withDeadline(
        this.client.set(this.prefix + key, buf, "PX", Math.max(1, Math.round(ttlSeconds * 1000))),
        this.timeoutMs,
        "response cache",
      );
    } catch (error) {
      this.failed("set", error);
    }
  }

  /** The client belongs to whoever created it (see acquireRedis). */
  async close(): Promise<void> {}
}

/**
 * The cache for this configuration: null when caching is off; on Redis when REDIS_URL is set; otherwise the
 * bounded in-process LRU (embedded default, single process). Closing it releases the Redis connection.
 */
export function createCacheFromConfig(config: Config, log: Logger): ResponseCache | null {
  if (!config.cache.enabled) return null;
  if (!config.redis.url) return new MemoryResponseCache({ maxEntries: config.cache.maxEntries });
  const lease = acquireRedis({
    url: config.redis.url,
    tlsCa: config.redis.tlsCa,
    cluster: config.redis.cluster,
    log,
  });
  const cache = new RedisResponseCache({ client: lease.client, log });
  cache.close = () => lease.release();
  return cache;
}
