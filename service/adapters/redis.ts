/**
 * ioredis client factory (REDIS_URL, optional REDIS_TLS_CA, REDIS_CLUSTER). The client is built so that no command
 * can hang:
 *
 * - `commandTimeout` is a backstop on every command (default 2 s); callers on the request path put their own,
 *   tighter deadline on top with `withDeadline`, which tolerates event-loop stalls (see there);
 * - `enableOfflineQueue: false`: while disconnected a command fails at once instead of waiting in a queue;
 * - `maxRetriesPerRequest: 1`: a command caught by a dropped connection is retried at most once after reconnect;
 * - reconnects forever with capped exponential backoff and jitter, so shared state comes back without a restart.
 *
 * Connection events are logged once per transition with host and port only, never the URL (it carries the password).
 * The rate limiter and the response cache share one client per URL (`acquireRedis` / `release`).
 *
 * Redis Cluster (`cluster: true`): an ioredis `Cluster` seeded from the URL(s), with the same guarantees — the node
 * connections get the options above, the cluster itself has no offline queue, reconnects to its seeds forever with
 * the same backoff and auto-pipelines per node. Callers see one `RedisClient` type; every multi-key command they
 * send must stay in one hash slot (the limiter's keys share a hash tag, the cache only uses single keys).
 */
import type { Cluster, ClusterOptions, default as Redis, RedisOptions } from "ioredis";
import type { Logger } from "pino";
import { splitRedisUrls } from "../lib/redis-url";
import { StartupError } from "../lib/startup";

/**
 * ioredis, loaded with the first client: a process without Redis (the embedded default, no REDIS_URL) never loads
 * it (~50-75 ms of start-up and ~20 MiB of RSS on a slow host).
 */
function ioredis(): typeof import("ioredis") {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require("ioredis") as typeof import("ioredis");
}

/** A standalone (or primary) client, or a Redis Cluster client: what the limiter and the cache accept. */
export type RedisClient = Redis | Cluster;

export interface RedisClientOptions {
  /**
   * `redis://` or `rediss://` URL; may carry a password (never logged). With `cluster`, one or more seed nodes,
   * comma-separated (user name and password are taken from the first).
   */
  url: string;
  /** Speak the Redis Cluster protocol (an ioredis `Cluster`). Default false. */
  cluster?: boolean;
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

/** Host and port only (of each seed node, comma-separated): what may appear in logs. */
export function redisEndpoint(url: string): string {
  return splitRedisUrls(url)
    .map((one) => {
      try {
        const u = new URL(one);
        return `${u.protocol}//${u.hostname}:${u.port || "6379"}`;
      } catch {
        return "redis";
      }
    })
    .join(",");
}

/** Capped exponential backoff with jitter: 50 ms, 100 ms, 200 ms … up to `cap`. Never gives up. */
export function reconnectDelay(attempt: number, cap: number): number {
  const base = Math.min(cap, 50 * 2 ** Math.min(attempt - 1, 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/**
 * The rate limiter's script, registered once per key count (see redis-limiter.ts). Its calls batch themselves (one
 * call per turn of the event loop carries every admission of the turn), so they skip auto-pipelining: going out at
 * once instead of a turn later.
 */
export const LIMITER_COMMANDS = { 1: "llmproxyLimit1", 2: "llmproxyLimit2" } as const;

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
    autoPipeliningIgnoredCommands: Object.values(LIMITER_COMMANDS),
    lazyConnect: false,
    ...(tls ? { tls } : {}),
  };
}

/** The seed nodes of a cluster URL list: host and port of each (credentials and TLS go to `clusterOptions`). */
export function clusterSeeds(url: string): Array<{ host: string; port: number }> {
  return splitRedisUrls(url).map((one) => {
    const u = new URL(one);
    // IPv6 literals come bracketed from URL; net.connect wants them bare.
    return { host: u.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(u.port || 6379) };
  });
}

/**
 * Options of a Cluster client: the node connections get `redisOptions` (timeouts, one retry, RESP2, TLS) plus the
 * credentials of the first seed URL — nodes discovered through CLUSTER SLOTS have no URL of their own. The cluster
 * level gets what ioredis keeps there. A lost node connection is not reconnected but replaced after the next slot
 * refresh (ioredis' default, right for failovers, where the slot moves to another address); a command caught by it
 * is re-sent after 100 ms, at most 16 times (ioredis' `retryDelayOnFailover`, `maxRedirections`) — request-path
 * callers' `withDeadline` still bounds the wait.
 */
export function clusterOptions(opts: RedisClientOptions): ClusterOptions {
  const cap = opts.maxReconnectDelayMs ?? 2000;
  // The node connections' reconnects and queueing are the cluster's business (ioredis fixes both per node):
  // drop ours, and auto-pipelining, which the cluster does per node itself.
  const {
    retryStrategy: _retry,
    enableOfflineQueue: _queue,
    enableAutoPipelining: _pipelining,
    ...node
  } = redisOptions(opts);
  const first = new URL(splitRedisUrls(opts.url)[0]);
  const tls = first.protocol === "rediss:";
  return {
    redisOptions: {
      ...node,
      ...(first.username ? { username: decodeURIComponent(first.username) } : {}),
      ...(first.password ? { password: decodeURIComponent(first.password) } : {}),
    },
    // While no seed answers, start over from the seeds forever, with the standalone client's backoff.
    clusterRetryStrategy: (attempt) => reconnectDelay(attempt, cap),
    // As standalone: while the cluster is not ready a command fails at once instead of waiting in a queue.
    enableOfflineQueue: false,
    // ioredis' ready check sends CLUSTER INFO to a random node; without the offline queue it fails whenever that
    // node's connection is still being set up, and the client starts over — in tests it took 20-50 s to get ready.
    // Without it, "ready" follows the first slot map; a command meeting CLUSTERDOWN is re-sent after 100 ms.
    enableReadyCheck: false,
    // Same-tick commands go out as one pipeline per node.
    enableAutoPipelining: true,
    autoPipeliningIgnoredCommands: Object.values(LIMITER_COMMANDS),
    // CLUSTER SLOTS runs on a fresh connection (with TLS, a handshake): allow it the connect bound, not 1 s.
    slotsRefreshTimeout: opts.connectTimeoutMs ?? 2000,
    // Managed clusters with TLS (ElastiCache, Memorystore) present certificates for their host names: keep the seed's
    // name instead of resolving it to an IP, which would fail certificate verification (see ioredis' README).
    ...(tls ? { dnsLookup: (address: string, callback) => callback(null, address) } : {}),
  };
}

/**
 * Log each connection transition once, with host and port only (never the URL): each distinct failure once until the
 * client is ready again — a reconnect loop (or a cluster's seeds and nodes failing in turn) must not flood the logs.
 */
function logTransitions(client: RedisClient, log: Logger): void {
  let healthy = false;
  const logged = new Set<string>();
  const failed = (message: string, node?: string) => {
    const what = node ? `${node} ${message}` : message;
    healthy = false;
    if (logged.has(what) || logged.size >= 32) return;
    logged.add(what);
    log.warn({ err: message, ...(node ? { node } : {}) }, "redis error");
  };
  client.on("ready", () => {
    healthy = true;
    logged.clear();
    log.info("redis ready");
  });
  client.on("error", (error: Error) => failed(error.message));
  // A cluster reports failures of single nodes separately; `node` is the node's "host:port".
  if (client instanceof ioredis().Cluster) {
    client.on("node error", (error: Error, node: string) => failed(error.message, node));
  }
  client.on("close", () => {
    if (healthy) log.warn("redis connection closed");
    healthy = false;
  });
  client.on("end", () => log.info("redis connection ended"));
}

/** A new client with bounded commands and logged connection transitions. */
export function createRedisClient(opts: RedisClientOptions & { cluster: true }): Cluster;
export function createRedisClient(opts: RedisClientOptions & { cluster?: false }): Redis;
export function createRedisClient(opts: RedisClientOptions): RedisClient;
export function createRedisClient(opts: RedisClientOptions): RedisClient {
  const endpoint = redisEndpoint(opts.url);
  const log = opts.log.child({ component: "redis", endpoint, ...(opts.cluster ? { cluster: true } : {}) });
  const { Cluster, Redis } = ioredis();
  const client = opts.cluster
    ? new Cluster(clusterSeeds(opts.url), clusterOptions(opts))
    : new Redis(opts.url, redisOptions(opts));
  logTransitions(client, log);
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
  client: RedisClient;
  refs: number;
}
const shared = new Map<string, Shared>();

export interface RedisLease {
  client: RedisClient;
  /** Drop this holder's reference; the last one closes the connection. */
  release(): Promise<void>;
}

/** One client per URL for the whole process: the limiter and the cache share a connection. */
export function acquireRedis(opts: RedisClientOptions): RedisLease {
  const key = `${opts.cluster ? "cluster " : ""}${opts.url}`;
  let entry = shared.get(key);
  if (!entry) {
    entry = { client: createRedisClient(opts), refs: 0 };
    shared.set(key, entry);
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
      shared.delete(key);
      await closeRedis(held.client);
    },
  };
}

/** QUIT politely within a bound (a cluster: every node), then drop the socket(s). */
export async function closeRedis(client: RedisClient): Promise<void> {
  if (client.status === "end") return;
  try {
    await Promise.race([client.quit(), new Promise((resolve) => setTimeout(resolve, 500).unref())]);
  } catch {
    // Not connected: nothing to say goodbye to.
  }
  // A cluster that has already ended must not be disconnected again: that would leave it "disconnecting".
  if ((client.status as string) !== "end") client.disconnect(false);
}

/** Replies meaning Redis refused the URL's credentials: waiting or reconnecting does not fix them. */
const REFUSED_CREDENTIALS = /^(WRONGPASS|NOAUTH|NOPERM)\b|invalid password|invalid username-password/i;

/**
 * At a worker's start, with REDIS_URL set: refused credentials stop the start with a line naming REDIS_URL (every
 * request would otherwise meet fail-open limits or fail-closed 503s, behind a pod that reports ready); a Redis that
 * is not reachable within `waitMs` is only logged, since the limiter and the cache are built to run through an
 * outage and pick Redis up when it comes.
 */
export async function checkRedisAtStart(
  opts: RedisClientOptions & { failureMode: "fail-open" | "fail-closed"; waitMs?: number },
): Promise<void> {
  const lease = acquireRedis(opts);
  const client = lease.client;
  const endpoint = redisEndpoint(opts.url);
  try {
    const outcome = await new Promise<{ ready: true } | { ready: false; error: string | null }>((resolve) => {
      let last: string | null = null;
      const done = (value: { ready: true } | { ready: false; error: string | null }) => {
        clearTimeout(timer);
        client.off("ready", onReady);
        client.off("error", onError);
        resolve(value);
      };
      const onReady = () => done({ ready: true });
      const onError = (error: Error) => {
        last = error.message.split("\n")[0];
        if (REFUSED_CREDENTIALS.test(last)) done({ ready: false, error: last });
      };
      const timer = setTimeout(() => done({ ready: false, error: last }), opts.waitMs ?? 2000);
      if (client.status === "ready") return done({ ready: true });
      client.on("ready", onReady);
      client.on("error", onError);
    });
    if (outcome.ready) return;
    if (outcome.error && REFUSED_CREDENTIALS.test(outcome.error))
      throw new StartupError(
        `env REDIS_URL: Redis at ${endpoint} refused the credentials (${outcome.error}); check the password (and user name) in REDIS_URL`,
      );
    opts.log.warn(
      { endpoint, err: outcome.error ?? undefined, failureMode: opts.failureMode },
      opts.failureMode === "fail-closed"
        ? "Redis not reachable at start: rate-limited requests are refused (503, fail-closed) and the cache is off until it is; check REDIS_URL"
        : "Redis not reachable at start: budgets are enforced per process (fail-open) and the cache is off until it is; check REDIS_URL",
    );
  } finally {
    await lease.release();
  }
}
