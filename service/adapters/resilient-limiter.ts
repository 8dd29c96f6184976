/**
 * The shared (Redis) limiter with a defined behaviour when Redis is unavailable — never a bare 500, never a hang:
 *
 * - `fail-open` (default): admit with an in-process limiter whose budgets are divided by the number of processes
 *   (replicas × workers), so the cluster as a whole stays near its budgets while Redis is away (how near: see the
 *   per-process shares in memory-limiter.ts);
 * - `fail-closed`: answer 503 `rate_limiter_unavailable` with a short Retry-After.
 *
 * Every Redis call is bounded by the client's command timeout; with the offline queue off, a call while
 * disconnected fails at once. After a failure the wrapper stays on the fallback for `probeIntervalMs` and then lets
 * one request try Redis again (and switches back as soon as the client reports `ready`), so shared limiting resumes
 * by itself when Redis returns. Transitions are logged once each; the mode is a gauge in /metrics.
 */
import type { Logger } from "pino";
import { Counter, Gauge } from "prom-client";
import type { Config } from "../config";
import { ServiceUnavailableError } from "../errors";
import { registry } from "../metrics";
import type { Admission, AdmissionRequest, RateLimiter, Reservation } from "../ports";
import { MemoryRateLimiter } from "./memory-limiter";
import { acquireRedis, withDeadline, type RedisClient } from "./redis";
import { RedisRateLimiter } from "./redis-limiter";

export const redisErrors = new Counter({
  name: "llmproxy_ratelimit_redis_errors_total",
  help: "Rate-limiter Redis calls that failed or timed out, by operation (admit, reconcile).",
  labelNames: ["operation"] as const,
  registers: [registry],
});

export const fallbackActive = new Gauge({
  name: "llmproxy_ratelimit_fallback_active",
  help: "1 while this process limits without Redis (fail-open: per-process budgets; fail-closed: rejecting). Summed over workers.",
  labelNames: ["mode"] as const,
  registers: [registry],
});

export const fallbackTransitions = new Counter({
  name: "llmproxy_ratelimit_fallback_transitions_total",
  help: "Switches between shared (Redis) and fallback limiting, by direction (to_fallback, to_shared).",
  labelNames: ["direction"] as const,
  registers: [registry],
});

export interface ResilientLimiterOptions {
  /** The shared limiter (Redis). */
  primary: RateLimiter;
  /** Its client, to learn when the connection is ready again. Optional (tests may wrap any limiter). */
  client?: Pick<RedisClient, "status" | "on" | "off" | "once"> | null;
  failureMode: "fail-open" | "fail-closed";
  /** Processes sharing the budgets while Redis is away (replicas × workers). Default 1. */
  processes?: number;
  log: Logger;
  /** Deadline of one shared admission or settlement, in ms (see withDeadline). Default 500. */
  timeoutMs?: number;
  /** After a failure, how long to stay on the fallback before trying Redis again, in ms. Default 1000. */
  probeIntervalMs?: number;
  /** Clock for the fallback limiter (tests). */
  now?: () => number;
  /**
   * At start-up, how long an admission may wait for the first connection before the failure mode applies, in ms.
   * Default 2000 (so a fail-closed replica does not answer 503 to its very first requests while connecting).
   */
  startupWaitMs?: number;
}

export type LimiterMode = "shared" | "fallback";

/** Deadline of one shared admission or settlement, in ms. */
const DEFAULT_TIMEOUT_MS = 500;

export class ResilientRateLimiter implements RateLimiter {
  private readonly primary: RateLimiter;
  private readonly fallback: MemoryRateLimiter;
  private readonly failureMode: "fail-open" | "fail-closed";
  private readonly processes: number;
  private readonly log: Logger;
  private readonly probeIntervalMs: number;
  private readonly timeoutMs: number;
  private readonly client: ResilientLimiterOptions["client"];
  private readonly onReady = () => {
    if (this.state === "fallback") this.retryAt = 0;
  };
  private state: LimiterMode = "shared";
  private retryAt = 0;
  /** Resolves at the first `ready` or after startupWaitMs; null once the wait is over. */
  private startup: Promise<void> | null = null;

  constructor(opts: ResilientLimiterOptions) {
    this.primary = opts.primary;
    this.failureMode = opts.failureMode;
    this.processes = Math.max(1, opts.processes ?? 1);
    this.log = opts.log.child({ component: "rate-limiter" });
    this.probeIntervalMs = opts.probeIntervalMs ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.fallback = new MemoryRateLimiter({ now: opts.now, processes: this.processes });
    this.client = opts.client ?? null;
    this.client?.on("ready", this.onReady);
    const client = this.client;
    if (client && client.status !== "ready") {
      this.startup = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, opts.startupWaitMs ?? 2000);
        timer.unref();
        const onFirstReady = () => {
          clearTimeout(timer);
          resolve();
        };
        client.once("ready", onFirstReady);
      }).then(() => {
        this.startup = null;
      });
    }
    fallbackActive.set({ mode: this.failureMode }, 0);
  }

  redisHealth(): { available: boolean; failClosed: boolean } {
    return {
      available: !this.client || this.client.status === "ready",
      failClosed: this.failureMode === "fail-closed",
    };
  }

  /** "shared" while Redis decides, "fallback" while it is unavailable. */
  mode(): LimiterMode {
    return this.state;
  }

  private toFallback(error: unknown): void {
    this.retryAt = Date.now() + this.probeIntervalMs;
    if (this.state === "fallback") return;
    this.state = "fallback";
    fallbackActive.set({ mode: this.failureMode }, 1);
    fallbackTransitions.inc({ direction: "to_fallback" });
    this.log.error(
      { err: (error as Error)?.message, failureMode: this.failureMode, processes: this.processes },
      this.failureMode === "fail-open"
        ? "rate limiter: Redis unavailable, limiting per process (budgets divided by processes)"
        : "rate limiter: Redis unavailable, rejecting requests (fail-closed)",
    );
  }

  private toShared(): void {
    if (this.state === "shared") return;
    this.state = "shared";
    fallbackActive.set({ mode: this.failureMode }, 0);
    fallbackTransitions.inc({ direction: "to_shared" });
    this.log.info("rate limiter: Redis is back, shared limiting resumed");
  }

  private shouldTryPrimary(): boolean {
    if (this.client && this.client.status !== "ready") return false;
    return this.state === "shared" || Date.now() >= this.retryAt;
  }

  async admit(req: AdmissionRequest): Promise<Admission> {
    if (this.startup) await this.startup;
    if (this.shouldTryPrimary()) {
      try {
        const admission = await withDeadline(this.primary.admit(req), this.timeoutMs, "rate limiter");
        this.toShared();
        if (admission.allowed) admission.reservation = this.guard(admission.reservation);
        return admission;
      } catch (error) {
        redisErrors.inc({ operation: "admit" });
        this.toFallback(error);
      }
    } else if (this.state === "shared") {
      // The client says it is not connected: do not even try (it would fail at once anyway).
      this.toFallback(new Error(`redis client ${this.client?.status}`));
    }
    if (this.failureMode === "fail-closed") {
      throw new ServiceUnavailableError(
        "Rate limiting is temporarily unavailable; try again shortly.",
        "rate_limiter_unavailable",
        { "retry-after": "1" },
      );
    }
    return this.fallback.admitNow(req);
  }

  /** A shared reservation whose reconcile/release never throws into the response path. */
  private guard(r: Reservation): Reservation {
    const safe = (op: () => Promise<void>) => async () => {
      try {
        await withDeadline(op(), this.timeoutMs, "rate limiter");
      } catch (error) {
        redisErrors.inc({ operation: "reconcile" });
        this.log.warn(
          { err: (error as Error).message },
          "rate limiter: reconcile failed; the reservation stands",
        );
      }
    };
    return {
      reconcile: (actual) => safe(() => r.reconcile(actual))(),
      release: safe(() => r.release()),
    };
  }

  async close(): Promise<void> {
    this.client?.off("ready", this.onReady);
    await this.fallback.close();
    await this.primary.close();
  }
}

/**
 * The limiter for this configuration: with REDIS_URL, the shared Redis limiter behind the resilient wrapper
 * (failure mode and process count from Config.limits / Config.server); without it, the in-process limiter of the
 * embedded default (one process: exact). Without Redis but with several processes (replicas × workers > 1) each
 * process enforces its share of every budget — approximate, so that is logged as a warning: set REDIS_URL.
 * Closing it releases the Redis connection.
 */
export function createRateLimiterFromConfig(
  config: Config,
  log: Logger,
): RateLimiter & { mode(): LimiterMode | "memory" } {
  const processes = config.limits.replicas * config.server.workers;
  if (!config.redis.url) {
    if (processes > 1) {
      log.warn(
        { processes },
        "rate limiter: no REDIS_URL, so each process enforces budgets / processes on its own (approximate); set REDIS_URL for shared limits",
      );
    }
    const memory = new MemoryRateLimiter({ processes });
    return Object.assign(memory, { mode: () => "memory" as const });
  }
  const lease = acquireRedis({
    url: config.redis.url,
    tlsCa: config.redis.tlsCa,
    cluster: config.redis.cluster,
    log,
  });
  const limiter = new ResilientRateLimiter({
    // The same deadline on both sides: Redis commits nothing for a caller the wrapper has stopped waiting for.
    primary: new RedisRateLimiter({ client: lease.client, deadlineMs: DEFAULT_TIMEOUT_MS }),
    client: lease.client,
    failureMode: config.limits.failureMode,
    processes,
    log,
  });
  const close = limiter.close.bind(limiter);
  limiter.close = async () => {
    await close();
    await lease.release();
  };
  return limiter;
}
