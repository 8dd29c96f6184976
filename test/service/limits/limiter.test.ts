/**
 * Limiter semantics, run against both backends with a fake clock: the in-process limiter and the Redis Lua script
 * on the real Redis at 127.0.0.1:6379 (unique key/team ids per test, so parallel suites never collide).
 */
import crypto from "node:crypto";
import Redis from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Budget } from "../../../service/config";
import type { Admission, AdmissionRequest, RateLimiter } from "../../../service/ports";
import { MemoryRateLimiter, formatReset, DAY_MS } from "../../../service/adapters/memory-limiter";
import { RedisRateLimiter, scopeKeys } from "../../../service/adapters/redis-limiter";
import { limitedScopes } from "../../../service/adapters/memory-limiter";
import { SHARED_REDIS_URL } from "../../helpers/redis";

const NONE: Budget = { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null };
const budget = (b: Partial<Budget>): Budget => ({ ...NONE, ...b });
const id = () => crypto.randomUUID();

/** A fake clock starting at a whole minute of some day (plus `offset` ms). */
function fakeClock(offset = 0) {
  let t = Date.UTC(2026, 10, 24, 10, 0, 0) + offset;
  return {
    now: () => t,
    set: (ms: number) => (t = ms),
    advance: (ms: number) => (t += ms),
  };
}

type Clock = ReturnType<typeof fakeClock>;

let redis: Redis;
beforeAll(() => {
  redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
});
afterAll(async () => {
  await redis.quit();
});

const backends: Array<[string, (clock: Clock) => RateLimiter]> = [
  ["memory", (clock) => new MemoryRateLimiter({ now: clock.now })],
  [
    "redis",
    (clock) => new RedisRateLimiter({ client: redis, now: clock.now, prefix: `t${id().slice(0, 8)}` }),
  ],
];

function req(p: Partial<AdmissionRequest>): AdmissionRequest {
  return { keyId: id(), teamId: null, keyBudget: NONE, teamBudget: null, tokens: 1, ...p };
}

function allowed(a: Admission): Extract<Admission, { allowed: true }> {
  if (!a.allowed) throw new Error(`expected admission, got rejection by ${a.scope} ${a.budget}`);
  return a;
}

function rejected(a: Admission): Extract<Admission, { allowed: false }> {
  if (a.allowed) throw new Error("expected a rejection");
  return a;
}

describe.each(backends)("%s limiter", (_name, make) => {
  it("a request over the team budget consumes nothing, not even the key's budget", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const teamId = id();
    const keyA = id();
    const keyB = id();
    const team = budget({ tokensPerMinute: 1000 });
    allowed(await limiter.admit(req({ keyId: keyA, teamId, teamBudget: team, tokens: 600 })));
    // B has room for exactly one request; the team has no room for 600 more tokens.
    const keyBBudget = budget({ requestsPerMinute: 1, tokensPerMinute: 500 });
    const r = rejected(
      await limiter.admit(req({ keyId: keyB, teamId, keyBudget: keyBBudget, teamBudget: team, tokens: 450 })),
    );
    expect(r.scope).toBe("team");
    expect(r.budget).toBe("tokens_per_minute");
    // B's single request and its 500 tokens are untouched: a request that fits the team passes.
    const ok = allowed(
      await limiter.admit(req({ keyId: keyB, teamId, keyBudget: keyBBudget, teamBudget: team, tokens: 400 })),
    );
    expect(ok.headers["x-ratelimit-remaining-requests"]).toBe("0");
    // And the team did not keep the rejected 450 either: 600 + 400 = 1000 is exactly full.
    rejected(await limiter.admit(req({ keyId: keyA, teamId, teamBudget: team, tokens: 1 })));
  });

  it("a request over the key budget leaves the team budget untouched", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const teamId = id();
    const team = budget({ requestsPerMinute: 2 });
    const keyA = { keyId: id(), teamId, keyBudget: budget({ requestsPerMinute: 1 }), teamBudget: team };
    allowed(await limiter.admit(req(keyA)));
    const r = rejected(await limiter.admit(req(keyA)));
    expect([r.scope, r.budget]).toEqual(["key", "requests_per_minute"]);
    const keyB = { keyId: id(), teamId, teamBudget: team };
    allowed(await limiter.admit(req(keyB)));
    const t = rejected(await limiter.admit(req(keyB)));
    expect([t.scope, t.budget]).toEqual(["team", "requests_per_minute"]);
  });

  it("no 60-second span ever holds more than the per-minute budget, across any boundary", async () => {
    const clock = fakeClock(-30_000);
    const limiter = make(clock);
    const keyId = id();
    const rpm = 10;
    const admittedAt: number[] = [];
    // Deterministic pseudo-random arrivals over 5 minutes, denser than the budget (≈ 4 per second at peaks).
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const end = clock.now() + 5 * 60_000;
    while (clock.now() < end) {
      const a = await limiter.admit(req({ keyId, keyBudget: budget({ requestsPerMinute: rpm }) }));
      if (a.allowed) admittedAt.push(clock.now());
      clock.advance(Math.floor(rand() * 600));
    }
    for (const t of admittedAt) {
      const inSpan = admittedAt.filter((x) => x > t - 60_000 && x <= t).length;
      expect(inSpan).toBeLessThanOrEqual(rpm);
    }
    // …and it is not stingy: 5 minutes allow close to 5 budgets.
    expect(admittedAt.length).toBeGreaterThanOrEqual(4 * rpm);
  });

  it("refuses the classic fixed-window burst (budget at 0:59.9, again at 1:00.1)", async () => {
    const clock = fakeClock(59_900);
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 5, tokensPerMinute: 500 });
    for (let i = 0; i < 5; i++) allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 100 })));
    clock.advance(200);
    const r = rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 100 })));
    expect(r.retryAfterSeconds).toBe(60);
  });

  it("tokens per minute: the sliding window holds for tokens too", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ tokensPerMinute: 1000 });
    allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 700 })));
    clock.advance(30_000);
    allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 300 })));
    clock.advance(20_000);
    const r = rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 200 })));
    expect(r.budget).toBe("tokens_per_minute");
    // The 700 leave the window 61 s after their second started: at +61 s; now is +50 s → 11 s.
    expect(r.retryAfterSeconds).toBe(11);
  });

  it("Retry-After is accurate: rejected just before it, admitted at it", async () => {
    const clock = fakeClock(250);
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 2 });
    allowed(await limiter.admit(req({ keyId, keyBudget })));
    clock.advance(30_000);
    allowed(await limiter.admit(req({ keyId, keyBudget })));
    clock.advance(10_000);
    const r = rejected(await limiter.admit(req({ keyId, keyBudget })));
    const retryMs = Number(r.headers["retry-after-ms"]);
    expect(retryMs).toBe(61_000 - 40_250);
    expect(r.retryAfterSeconds).toBe(Math.ceil(retryMs / 1000));
    expect(r.headers["retry-after"]).toBe(String(r.retryAfterSeconds));
    clock.advance(retryMs - 1);
    rejected(await limiter.admit(req({ keyId, keyBudget })));
    clock.advance(1);
    allowed(await limiter.admit(req({ keyId, keyBudget })));
  });

  it("tokens per day is a UTC calendar budget, reset at midnight", async () => {
    const clock = fakeClock();
    const midnight = (Math.floor(clock.now() / DAY_MS) + 1) * DAY_MS;
    clock.set(midnight - 60_000);
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ tokensPerDay: 1000 });
    allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 900 })));
    clock.advance(30_000);
    const r = rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 200 })));
    expect(r.budget).toBe("tokens_per_day");
    expect(r.retryAfterSeconds).toBe(30);
    expect(r.headers["x-ratelimit-remaining-tokens"]).toBe("100");
    clock.set(midnight);
    const ok = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 200 })));
    expect(ok.headers["x-ratelimit-remaining-tokens"]).toBe("800");
  });

  it("reconcile refunds the unused part and charges an overage", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ tokensPerMinute: 1000, tokensPerDay: 5000 });
    const a = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 800 })));
    await a.reservation.reconcile(300);
    // 300 used: 700 fit, 701 do not.
    rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 701 })));
    const b = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 700 })));
    expect(b.headers["x-ratelimit-remaining-tokens"]).toBe("0");
    // A second reconcile of the same reservation is a no-op.
    await a.reservation.reconcile(0);
    rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 1 })));

    // Overage: reserved 100, used 600 → 500 more charged, now.
    clock.advance(61_000);
    const c = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 100 })));
    await c.reservation.reconcile(600);
    const d = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 400 })));
    expect(d.headers["x-ratelimit-remaining-tokens"]).toBe("0");
    // Day total: 300 + 700 + 600 + 400 = 2000 of 5000; the minute budget is the tighter one.
    clock.advance(61_000);
    const e = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1000 })));
    expect(e.headers["x-ratelimit-limit-tokens"]).toBe("1000");
    expect(e.headers["x-ratelimit-remaining-tokens"]).toBe("0");
    clock.advance(61_000);
    const f = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1 })));
    expect(f.headers["x-ratelimit-limit-tokens"]).toBe("1000");
    expect(f.headers["x-ratelimit-remaining-tokens"]).toBe("999");
    const g = allowed(
      await limiter.admit(req({ keyId, keyBudget: budget({ tokensPerDay: 5000 }), tokens: 1 })),
    );
    expect(g.headers["x-ratelimit-remaining-tokens"]).toBe(String(5000 - 3002));
  });

  it("release gives the tokens back but the request still counts", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 2, tokensPerMinute: 1000 });
    const a = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 900 })));
    await a.reservation.release();
    const b = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1000 })));
    expect(b.headers["x-ratelimit-remaining-requests"]).toBe("0");
    expect(b.headers["x-ratelimit-remaining-tokens"]).toBe("0");
    const r = rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 1 })));
    expect(r.budget).toBe("requests_per_minute");
  });

  it("a refund after the reservation left the window does not create room that was never used", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ tokensPerMinute: 1000 });
    const a = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1000 })));
    clock.advance(70_000);
    allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1000 })));
    await a.reservation.reconcile(0);
    rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 1 })));
  });

  it("headers: OpenAI names and formats, the most constraining budget of each kind", async () => {
    const clock = fakeClock(400);
    const limiter = make(clock);
    const teamId = id();
    const a = allowed(
      await limiter.admit(
        req({
          teamId,
          keyBudget: budget({ requestsPerMinute: 100, tokensPerMinute: 10_000 }),
          teamBudget: budget({ requestsPerMinute: 3, tokensPerDay: 50_000 }),
          tokens: 1200,
        }),
      ),
    );
    expect(a.headers).toEqual({
      "x-ratelimit-limit-requests": "3",
      "x-ratelimit-remaining-requests": "2",
      "x-ratelimit-reset-requests": "1m1s",
      "x-ratelimit-limit-tokens": "10000",
      "x-ratelimit-remaining-tokens": "8800",
      "x-ratelimit-reset-tokens": "1m1s",
    });
  });

  it("a rejection's x-ratelimit-reset-* count from the newest admission in the window, like its Retry-After", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 3, tokensPerMinute: 300 });
    for (let i = 0; i < 3; i++) allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 100 })));
    // 50.5 s later nothing newer is in the window: all of it leaves at +61 s, 10.5 s from now.
    clock.advance(50_500);
    const r = rejected(await limiter.admit(req({ keyId, keyBudget, tokens: 100 })));
    expect(r.headers["retry-after-ms"]).toBe("10500");
    expect(r.headers["x-ratelimit-reset-requests"]).toBe("11s");
    expect(r.headers["x-ratelimit-reset-tokens"]).toBe("11s");
    // And it is true: whole again at that moment.
    clock.advance(10_500);
    expect(allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 100 }))).headers).toMatchObject({
      "x-ratelimit-remaining-requests": "2",
      "x-ratelimit-remaining-tokens": "200",
    });
  });

  it("null is unlimited, 0 is blocked", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const open = await limiter.admit(req({ tokens: 10_000_000 }));
    expect(allowed(open).headers).toEqual({});
    const keyId = id();
    for (const field of ["requestsPerMinute", "tokensPerMinute", "tokensPerDay"] as const) {
      const r = rejected(await limiter.admit(req({ keyId, keyBudget: budget({ [field]: 0 }), tokens: 0 })));
      expect(r.budget).toBe(
        {
          requestsPerMinute: "requests_per_minute",
          tokensPerMinute: "tokens_per_minute",
          tokensPerDay: "tokens_per_day",
        }[field],
      );
    }
  });

  it("a request larger than the whole budget is rejected with the window as Retry-After", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const r = rejected(
      await limiter.admit(req({ keyBudget: budget({ tokensPerMinute: 100 }), tokens: 101 })),
    );
    expect(r.budget).toBe("tokens_per_minute");
    expect(r.retryAfterSeconds).toBe(60);
  });

  it("200 concurrent admissions against 50 requests/minute admit exactly 50", async () => {
    const clock = fakeClock();
    const limiter = make(clock);
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 50 });
    const results = await Promise.all(
      Array.from({ length: 200 }, () => limiter.admit(req({ keyId, keyBudget }))),
    );
    expect(results.filter((r) => r.allowed)).toHaveLength(50);
    const rejections = results.filter((r) => !r.allowed);
    expect(rejections).toHaveLength(150);
    for (const r of rejections) expect(r.headers["retry-after"]).toBe("61");
  });
});

describe("redis limiter storage", () => {
  it("one admission touches one hash tag (Redis Cluster slot), even with a team", () => {
    const tagOf = (k: string) => /\{([^}]*)\}/.exec(k)![1];
    const r = req({
      teamId: "team-1",
      keyBudget: budget({ requestsPerMinute: 1 }),
      teamBudget: budget({ tokensPerDay: 9 }),
    });
    const keys = scopeKeys("llmproxy", r, limitedScopes(r));
    expect(keys).toHaveLength(2);
    expect(new Set(keys.map(tagOf))).toEqual(new Set(["llmproxy:t:team-1"]));
    const solo = req({ keyId: "k1", keyBudget: budget({ requestsPerMinute: 1 }) });
    expect(scopeKeys("llmproxy", solo, limitedScopes(solo))).toEqual(["{llmproxy:k:k1}"]);
  });

  it("keeps a small hash per scope that expires after the UTC day", async () => {
    const prefix = `t${id().slice(0, 8)}`;
    const limiter = new RedisRateLimiter({ client: redis, prefix });
    const keyId = id();
    const a = await limiter.admit(req({ keyId, keyBudget: budget({ requestsPerMinute: 5 }), tokens: 42 }));
    expect(a.allowed).toBe(true);
    const key = `{${prefix}:k:${keyId}}`;
    const h = await redis.hgetall(key);
    expect(h.R).toBe("1");
    expect(h.T).toBe("42");
    const ttl = await redis.pttl(key);
    expect(ttl).toBeGreaterThan(61_000);
    expect(ttl).toBeLessThanOrEqual(DAY_MS + 61_000);
    await redis.del(key);
  });

  it("uses the server clock when no clock is given", async () => {
    const limiter = new RedisRateLimiter({ client: redis, prefix: `t${id().slice(0, 8)}` });
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 1 });
    allowed(await limiter.admit(req({ keyId, keyBudget })));
    const r = rejected(await limiter.admit(req({ keyId, keyBudget })));
    expect(r.retryAfterSeconds).toBeGreaterThanOrEqual(60);
    expect(r.retryAfterSeconds).toBeLessThanOrEqual(61);
  });
});

/**
 * The operations ("admit", "adjust") of the script calls a limiter makes on `client`, in order: the client and Redis
 * are real, only the calls are counted. Call after the limiter is constructed (it defines the commands).
 */
function countScriptCalls(client: Redis): string[] {
  const named = client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const calls: string[] = [];
  for (const name of ["llmproxyLimit1", "llmproxyLimit2"]) {
    const real = named[name]!.bind(client);
    named[name] = (...a: unknown[]) => {
      calls.push(String(a[name === "llmproxyLimit1" ? 1 : 2])); // the operation, after the keys
      return real(...a);
    };
  }
  return calls;
}

describe("redis limiter batching", () => {
  it("admissions of one turn on the same scopes are one script call, decided in order as if sent one by one", async () => {
    const clock = fakeClock();
    const client = redis.duplicate();
    const limiter = new RedisRateLimiter({ client, now: clock.now, prefix: `t${id().slice(0, 8)}` });
    const calls = countScriptCalls(client);
    const teamId = id();
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 3 });
    const teamBudget = budget({ tokensPerMinute: 1000 });
    // Five on one key (3 requests a minute), and one on another key of the team (other scopes: a call of its own).
    const results = await Promise.all([
      ...[100, 200, 300, 50, 50].map((tokens) =>
        limiter.admit(req({ keyId, teamId, keyBudget, teamBudget, tokens })),
      ),
      limiter.admit(req({ teamId, keyBudget, teamBudget, tokens: 350 })),
    ]);
    expect(calls).toEqual(["admit", "admit"]);
    expect(results.map((r) => r.allowed)).toEqual([true, true, true, false, false, true]);
    expect(results.slice(0, 3).map((r) => allowed(r).headers["x-ratelimit-remaining-requests"])).toEqual([
      "2",
      "1",
      "0",
    ]);
    expect(rejected(results[3]!).budget).toBe("requests_per_minute");
    // The team's tokens: 100 + 200 + 300 from the first key, then the other key's 350 (the rejected consumed nothing).
    expect(allowed(results[5]!).headers["x-ratelimit-remaining-tokens"]).toBe("50");
    await client.quit();
  });

  it("splits a large turn into calls of at most 32 admissions, with every decision right", async () => {
    const clock = fakeClock();
    const client = redis.duplicate();
    const limiter = new RedisRateLimiter({ client, now: clock.now, prefix: `t${id().slice(0, 8)}` });
    const calls = countScriptCalls(client);
    const keyId = id();
    const keyBudget = budget({ requestsPerMinute: 50 });
    const results = await Promise.all(
      Array.from({ length: 70 }, () => limiter.admit(req({ keyId, keyBudget }))),
    );
    expect(calls).toEqual(["admit", "admit", "admit"]);
    expect(results.filter((r) => r.allowed)).toHaveLength(50);
    expect(results.findIndex((r) => !r.allowed)).toBe(50);
    const remaining = results
      .slice(0, 50)
      .map((r) => Number(allowed(r).headers["x-ratelimit-remaining-requests"]));
    expect(remaining).toEqual(Array.from({ length: 50 }, (_, i) => 49 - i));
    await client.quit();
  });

  it("a failed call rejects every admission it carried (the resilient wrapper then falls back)", async () => {
    const client = redis.duplicate();
    const limiter = new RedisRateLimiter({ client, prefix: `t${id().slice(0, 8)}` });
    await client.quit();
    const keyBudget = budget({ requestsPerMinute: 5 });
    const out = await Promise.allSettled([1, 2, 3].map(() => limiter.admit(req({ keyBudget }))));
    expect(out.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
  });
});

describe("redis limiter refunds", () => {
  it("refunds of one turn for the same scopes, slot and day go out as one script call, with the exact result", async () => {
    const clock = fakeClock();
    const client = redis.duplicate();
    const prefix = `t${id().slice(0, 8)}`;
    const limiter = new RedisRateLimiter({ client, now: clock.now, prefix });
    const calls = countScriptCalls(client);
    const teamId = id();
    const keyA = id();
    const keyBudget = budget({ tokensPerMinute: 10_000, tokensPerDay: 100_000 });
    const teamBudget = budget({ tokensPerMinute: 20_000 });
    const a = await Promise.all(
      [1000, 1000, 1000, 1000].map((tokens) =>
        limiter.admit(req({ keyId: keyA, teamId, keyBudget, teamBudget, tokens })),
      ),
    );
    // Another key of the same team: other scopes, so its refund is a call of its own.
    const other = allowed(await limiter.admit(req({ teamId, keyBudget, teamBudget, tokens: 500 })));
    calls.length = 0;
    await Promise.all([
      ...a.map((x, i) => allowed(x).reservation.reconcile(100 * i)),
      other.reservation.reconcile(0),
    ]);
    expect(calls).toEqual(["adjust", "adjust"]);
    // Refunded 1000 + 900 + 800 + 700 of key A's 4000: 600 used; the team got those and key B's 500 back.
    const b = allowed(await limiter.admit(req({ keyId: keyA, teamId, keyBudget, teamBudget, tokens: 9400 })));
    expect(b.headers["x-ratelimit-remaining-tokens"]).toBe("0");
    rejected(await limiter.admit(req({ keyId: keyA, teamId, keyBudget, teamBudget, tokens: 1 })));
    const team = await client.hgetall(`{${prefix}:t:${teamId}}`);
    expect(team.T).toBe(String(600 + 9400));
    // Refunds in different turns are separate calls; an overage is charged at once, alone.
    calls.length = 0;
    const c = allowed(await limiter.admit(req({ keyId: id(), keyBudget, tokens: 100 })));
    const d = allowed(await limiter.admit(req({ keyId: id(), keyBudget, tokens: 100 })));
    await c.reservation.reconcile(50);
    await d.reservation.reconcile(150);
    expect(calls).toEqual(["admit", "admit", "adjust", "adjust"]);
    await client.quit();
  });

  it("a failed refund call rejects every reconcile it carried", async () => {
    const clock = fakeClock();
    const client = redis.duplicate();
    const limiter = new RedisRateLimiter({ client, now: clock.now, prefix: `t${id().slice(0, 8)}` });
    const keyId = id();
    const keyBudget = budget({ tokensPerMinute: 10_000 });
    const a = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1000 })));
    const b = allowed(await limiter.admit(req({ keyId, keyBudget, tokens: 1000 })));
    await client.quit();
    const results = await Promise.allSettled([a.reservation.reconcile(10), b.reservation.reconcile(20)]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
  });
});

describe("per-process shares (fail-open, or several processes without Redis)", () => {
  it("a share is never below 1 request: 12 processes admit up to 12 a minute for a 5 requests/minute key", async () => {
    const keyId = id();
    let admitted = 0;
    for (let p = 0; p < 12; p++) {
      const limiter = new MemoryRateLimiter({ now: fakeClock().now, processes: 12 });
      for (let i = 0; i < 5; i++) {
        const a = await limiter.admit(req({ keyId, keyBudget: budget({ requestsPerMinute: 5 }) }));
        if (a.allowed) admitted++;
      }
    }
    // What the README says: below REPLICAS × WORKERS, up to one request per process per minute.
    expect(admitted).toBe(12);
  });
});

describe("formatReset", () => {
  it("formats like OpenAI", () => {
    expect(formatReset(0)).toBe("0s");
    expect(formatReset(250)).toBe("250ms");
    expect(formatReset(1000)).toBe("1s");
    expect(formatReset(59_001)).toBe("1m0s");
    expect(formatReset(360_000)).toBe("6m0s");
    expect(formatReset(3_723_000)).toBe("1h2m3s");
  });
});
