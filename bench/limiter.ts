// Rate-limiter throughput: admissions per second through the real Lua script against a local Redis (REDIS_URL, or
// 127.0.0.1:6379), with many requests in flight from one process (ioredis auto-pipelining batches same-tick calls),
// plus the same through the in-process limiter for reference. Every admission checks key and team budgets (rpm,
// tpm, tpd on both) and commits them; each admitted request is also reconciled, as the proxy does.
// Run: npx ts-node --transpile-only bench/limiter.ts  (or node dist/bench/limiter.js). Target: >= 10,000/s.
import crypto from "node:crypto";
import type Redis from "ioredis";
import pino from "pino";
import type { Budget } from "../service/config";
import type { AdmissionRequest, RateLimiter } from "../service/ports";
import { MemoryRateLimiter } from "../service/adapters/memory-limiter";
import { RedisRateLimiter } from "../service/adapters/redis-limiter";
import { closeRedis, createRedisClient } from "../service/adapters/redis";

export interface LimiterBenchRow {
  backend: "redis" | "memory";
  /** Whether each admitted request was also reconciled (a second script call, as in the proxy). */
  reconcile: boolean;
  /** Requests in flight at once. */
  concurrency: number;
  admissions: number;
  rejections: number;
  seconds: number;
  admissionsPerSecond: number;
  /** Latency of one admission, ms. */
  p50Ms: number;
  p99Ms: number;
  /** CPU time of this (client) process per admission, µs — independent of what else shares the machine. */
  clientCpuUsPerAdmission: number;
  /** CPU time of redis-server per admission (INFO cpu), µs; 0 for the in-process limiter. */
  redisCpuUsPerAdmission: number;
}

async function redisCpuSeconds(client: Redis | null): Promise<number> {
  if (!client) return 0;
  const info = await client.info("cpu");
  let total = 0;
  for (const m of info.matchAll(/^used_cpu_(?:user|sys):([0-9.]+)/gm)) total += Number(m[1]);
  return total;
}

export interface LimiterBenchOptions {
  redisUrl?: string;
  /** Seconds per scenario. Default 5. */
  seconds?: number;
  /** In-flight admissions. Default 256. */
  concurrency?: number;
  /** Distinct keys (spread over keys/10 teams). Default 1000. */
  keys?: number;
}

// Generous budgets: the script does all its work (prune, check 6 budgets, commit) and almost everything is admitted.
const KEY_BUDGET: Budget = {
  requestsPerMinute: 1_000_000,
  tokensPerMinute: 1_000_000_000,
  tokensPerDay: 1e12,
};
const TEAM_BUDGET: Budget = { requestsPerMinute: 10_000_000, tokensPerMinute: 1e10, tokensPerDay: 1e13 };

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function drive(
  backend: LimiterBenchRow["backend"],
  limiter: RateLimiter,
  opts: Required<Omit<LimiterBenchOptions, "redisUrl">>,
  reconcile: boolean,
  client: Redis | null,
): Promise<LimiterBenchRow> {
  const run = crypto.randomUUID().slice(0, 8);
  const requests: AdmissionRequest[] = Array.from({ length: opts.keys }, (_, i) => ({
    keyId: `bench-${run}-k${i}`,
    teamId: `bench-${run}-t${i % Math.max(1, Math.floor(opts.keys / 10))}`,
    keyBudget: KEY_BUDGET,
    teamBudget: TEAM_BUDGET,
    tokens: 500,
  }));
  let admissions = 0;
  let rejections = 0;
  let n = 0;
  const latencies: number[] = [];
  const redisCpu0 = await redisCpuSeconds(client);
  const cpu0 = process.cpuUsage();
  const deadline = performance.now() + opts.seconds * 1000;
  const started = performance.now();
  const worker = async () => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      const a = await limiter.admit(requests[n++ % requests.length]);
      if (latencies.length < 200_000) latencies.push(performance.now() - t0);
      if (a.allowed) {
        admissions++;
        if (reconcile) await a.reservation.reconcile(300);
      } else rejections++;
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const redisCpu = (await redisCpuSeconds(client)) - redisCpu0;
  latencies.sort((a, b) => a - b);
  return {
    backend,
    reconcile,
    concurrency: opts.concurrency,
    admissions,
    rejections,
    seconds: Math.round(seconds * 100) / 100,
    admissionsPerSecond: Math.round(admissions / seconds),
    p50Ms: Math.round(percentile(latencies, 50) * 100) / 100,
    p99Ms: Math.round(percentile(latencies, 99) * 100) / 100,
    clientCpuUsPerAdmission: Math.round((cpu.user + cpu.system) / Math.max(1, admissions)),
    redisCpuUsPerAdmission: Math.round((redisCpu * 1e6) / Math.max(1, admissions)),
  };
}

export async function runLimiterBench(opts: LimiterBenchOptions = {}): Promise<LimiterBenchRow[]> {
  const o = { seconds: opts.seconds ?? 5, concurrency: opts.concurrency ?? 256, keys: opts.keys ?? 1000 };
  const url = opts.redisUrl ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
  const log = pino({ level: "warn" });
  const client = createRedisClient({ url, log, commandTimeoutMs: 10_000 });
  await new Promise<void>((resolve, reject) => {
    client.once("ready", () => resolve());
    setTimeout(
      () => reject(new Error(`Redis at ${url.replace(/\/\/[^@]*@/, "//")} not ready within 5 s`)),
      5000,
    ).unref();
  });
  const rows: LimiterBenchRow[] = [];
  try {
    // Warm up: load the script, open the connection's buffers.
    const redisLimiter = new RedisRateLimiter({ client, prefix: "llmproxy-bench" });
    await drive("redis", redisLimiter, { ...o, seconds: 0.5 }, false, client);
    rows.push(await drive("redis", redisLimiter, o, false, client));
    rows.push(await drive("redis", redisLimiter, o, true, client));
    rows.push(
      await drive("memory", new MemoryRateLimiter(), { ...o, seconds: Math.min(o.seconds, 2) }, true, null),
    );
  } finally {
    // Leave nothing behind in the shared Redis.
    const stream = client.scanStream({ match: "{llmproxy-bench:*", count: 1000 });
    for await (const keys of stream as AsyncIterable<string[]>) if (keys.length) await client.unlink(...keys);
    await closeRedis(client);
  }
  return rows;
}

export function formatLimiterBench(rows: LimiterBenchRow[]): string {
  const lines = [
    "backend  +reconcile  in-flight  admissions/s  p50 ms  p99 ms  client µs/adm  redis µs/adm  (target >= 10,000/s on Redis)",
  ];
  for (const r of rows) {
    lines.push(
      `${r.backend.padEnd(8)} ${(r.reconcile ? "yes" : "no").padEnd(10)} ${String(r.concurrency).padStart(9)}  ${String(r.admissionsPerSecond).padStart(12)}  ${r.p50Ms
        .toFixed(2)
        .padStart(
          6,
        )}  ${r.p99Ms.toFixed(2).padStart(6)}  ${String(r.clientCpuUsPerAdmission).padStart(13)}  ${String(
        r.redisCpuUsPerAdmission,
      ).padStart(12)}`,
    );
  }
  return lines.join("\n");
}

if (require.main === module) {
  runLimiterBench()
    .then((rows) => console.log(formatLimiterBench(rows)))
    .catch((error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    });
}
