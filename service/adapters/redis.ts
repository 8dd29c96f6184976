/**
 * ioredis client factory (REDIS_URL, optional REDIS_TLS_CA). The client is built so that no command can hang:
 *
 * - `commandTimeout` is a backstop on every command (default 2 s); callers on the request path put their own,
 *   tighter deadline on top with `withDeadline`, which tolerates event-loop stalls (see there);
 * - `enableOfflineQueue: false`: while disconnected a command fails at once instead of waiting in a queue;
 * - `maxRetriesPerRequest: 1`: a command caught by a dropped connection is retried at most once after reconnect;
 * - reconnects forever with capped exponential backoff and jitter, so shared state comes back without a restart.
 *
 * Connection events are logged once per transition with host and port only, never the URL (it carries the password).
 * The rate limiter and the response cache share one client per URL (`acquireRedis` / `release`).
 */
import Redis, { type RedisOptions } from "ioredis";
import type { Logger } from "pino";

export interface RedisClientOptions {
  /** `redis://` or `rediss://` URL; may carry a password (never logged). */
  url: string;
  /** PEM of the server CA for `rediss://` where the cloud needs it (Memorystore). Default: the system CAs. */
  tlsCa?: string | null;
  log: Logger;
  /** Backstop on any single command, in ms. Default 2000 (request-path callers add `withDeadline`). */
  commandTimeoutMs?: number;
  /** Bound on establishing a connection, in ms. Default 2000. */
  connectTimeoutMs?: number;
  /** Upper bound of the reconnect backoff, in ms. Default 2000. */
  maxReconnectDelayMs?: number;
}

/** Host and port only: what may appear in logs. */
export function redisEndpoint(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.hostname}:${u.port || "6379"}`;
  } catch {
    return "redis";
  }
}

/** Capped exponential backoff with jitter: 50 ms, 100 ms, 200 ms … up to `cap`. Never gives up. */
export function reconnectDelay(attempt: number, cap: number): number {
  const base = Math.min(cap, 50 * 2 ** Math.min(attempt - 1, 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

export function redisOptions(opts: RedisClientOptions): RedisOptions {
  const cap = opts.maxReconnectDelayMs ?? 2000;
  const tls = opts.url.startsWith("rediss://") ? (opts.tlsCa ? { ca: opts.tlsCa } : {}) : undefined;
  return {
    commandTimeout: opts.commandTimeoutMs ?? 2000,
    connectTimeout: opts.connectTimeoutMs ?? 2000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (attempt) => reconnectDelay(attempt, cap),
    // RESP2 works on every managed Redis (some still refuse HELLO 3); the replies we use look the same in both.
    protocol: 2,
    // Concurrent admissions from one process share a round trip (same-tick commands go out as one pipeline).
    enableAutoPipelining: true,
    lazyConnect: false,
    ...(tls ? { tls } : {}),
  };
}

/** A new client with bounded commands and logged connection transitions. */
export function createRedisClient(opts: RedisClientOptions): Redis {
  const endpoint = redisEndpoint(opts.url);
  const log = opts.log.child({ component: "redis", endpoint });
  const client = new Redis(opts.url, redisOptions(opts));
  let healthy = false;
  let lastError = "";
  client.on("ready", () => {
    healthy = true;
    lastError = "";
    log.info("redis ready");
  });
  client.on("error", (error: Error) => {
    // One line per distinct failure while down: a reconnect loop must not flood the logs.
    const message = error.message;
    if (healthy || message !== lastError) log.warn({ err: message }, "redis error");
    healthy = false;
    lastError = message;
  });
  client.on("close", () => {
    if (healthy) log.warn("redis connection closed");
    healthy = false;
  });
  client.on("end", () => log.info("redis connection ended"));
  return client;
}

/**
 * Reject when `promise` has not settled within `ms`. The rejection is deferred by one `setImmediate`, so a reply that
 * already sits in the socket buffer when the timer fires — because the event loop was blocked (GC, a large
 * synchronous tokenization) rather than Redis being slow — is still read in the poll phase and wins. A plain timer
 * (as ioredis' commandTimeout) fires first after a stall and turns a healthy Redis into a spurious failure.
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (settled) return;
        settled = true;
        reject(new Error(`${what}: no answer from Redis within ${ms} ms`));
      });
    }, ms);
    promise.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

interface Shared {
  client: Redis;
  refs: number;
}
const shared = new Map<string, Shared>();

export interface RedisLease {
  client: Redis;
  /** Drop this holder's reference; the last one closes the connection. */
  release(): Promise<void>;
}

/** One client per URL for the whole process: the limiter and the cache share a connection. */
export function acquireRedis(opts: RedisClientOptions): RedisLease {
  let entry = shared.get(opts.url);
  if (!entry) {
    entry = { client: createRedisClient(opts), refs: 0 };
    shared.set(opts.url, entry);
  }
  entry.refs++;
  const held = entry;
  let released = false;
  return {
    client: held.client,
    async release() {
      if (released) return;
      released = true;
      held.refs--;
      if (held.refs > 0) return;
      shared.delete(opts.url);
      await closeRedis(held.client);
    },
  };
}

/** QUIT politely within a bound, then drop the socket. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === "end") return;
  try {
    await Promise.race([client.quit(), new Promise((resolve) => setTimeout(resolve, 500).unref())]);
  } catch {
    // Not connected: nothing to say goodbye to.
  }
  client.disconnect(false);
}
