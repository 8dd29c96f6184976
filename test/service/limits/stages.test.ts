/**
 * The rate-limit and cache stages over HTTP, in the real stage order (request-context → errors → respond →
 * rate limit → cache → upstream), with in-process and Redis backends. The "upstream" is a tiny stand-in stage that
 * produces what the real upstream stage produces (a JSON result or a chunk stream, filling ctx.state.usage).
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import Koa, { type Middleware } from "koa";
import Router from "@koa/router";
import Redis from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig, type Budget, type Config, type DeploymentConfig } from "../../../service/config";
import { ClientClosedError, UpstreamError } from "../../../service/errors";
import { createLogger } from "../../../service/logger";
import type { RateLimiter, ResponseCache, UsageRow, UsageSink } from "../../../service/ports";
import type { ProxyState } from "../../../service/state";
import type { ChatCompletion, ChatCompletionChunk } from "../../../service/types";
import { createRequestContext } from "../../../service/stages/request-context";
import { createErrorHandler } from "../../../service/stages/errors";
import { createRespond } from "../../../service/stages/respond";
import { createRateLimit } from "../../../service/stages/rate-limit";
import { createCache } from "../../../service/stages/cache";
import { MemoryRateLimiter } from "../../../service/adapters/memory-limiter";
import { RedisRateLimiter } from "../../../service/adapters/redis-limiter";
import { MemoryResponseCache } from "../../../service/adapters/memory-cache";
import { RedisResponseCache } from "../../../service/adapters/redis-cache";
import { SHARED_REDIS_URL } from "../../helpers/redis";
import { leaveStreamAfter } from "../../helpers/stream";

const log = createLogger("silent");
const NONE: Budget = { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null };

type Behaviour =
  | "json"
  | "stream"
  | "fail"
  | "stream-error"
  | "slow-stream"
  /** The client left before the request went upstream (while waiting to retry, or in an earlier stage). */
  | "left-before-send"
  /** The client left while the provider had the request (a JSON answer, or a stream's first event, not waited for). */
  | "left-after-send";
const PROMPT = 10;
const USAGE = { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 };

function completion(model: string): ChatCompletion {
  return {
    id: `chatcmpl-${crypto.randomUUID()}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: "assistant", content: "Hello there" }, finish_reason: "stop" }],
    usage: { ...USAGE },
  };
}

function chunks(model: string, withUsage: boolean): ChatCompletionChunk[] {
  const id = `chatcmpl-${crypto.randomUUID()}`;
  const base = {
    id,
    object: "chat.completion.chunk" as const,
    created: Math.floor(Date.now() / 1000),
    model,
  };
  const out: ChatCompletionChunk[] = [
    { ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] },
    { ...base, choices: [{ index: 0, delta: { content: "Hello" }, finish_reason: null }] },
    { ...base, choices: [{ index: 0, delta: { content: " there" }, finish_reason: null }] },
    { ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
  ];
  if (withUsage) out.push({ ...base, choices: [], usage: { ...USAGE } });
  return out;
}

interface Harness {
  url: string;
  rows: UsageRow[];
  upstreamCalls: () => number;
  behave(b: Behaviour): void;
  close(): Promise<void>;
}

async function startHarness(
  config: Config,
  limiter: RateLimiter | null,
  cache: ResponseCache | null,
): Promise<Harness> {
  const rows: UsageRow[] = [];
  const sink: UsageSink = {
    record: (r) => void rows.push(r),
    flush: async () => undefined,
    close: async () => undefined,
    pending: () => 0,
  };
  let behaviour: Behaviour = "json";
  let calls = 0;

  // What auth + parse + token-count leave in ctx.state. Headers pick the key, team and its limits.
  const setup: Middleware<ProxyState> = async (ctx, next) => {
    const raw = await new Promise<string>((resolve) => {
      let s = "";
      ctx.req.on("data", (d) => (s += d));
      ctx.req.on("end", () => resolve(s));
    });
    const chat = JSON.parse(raw);
    if (ctx.get("x-test-master")) ctx.state.principal = { kind: "master" };
    else {
      const limits = JSON.parse(ctx.get("x-test-key-limits") || "null") ?? NONE;
      const teamId = ctx.get("x-test-team") || null;
      const keyId = ctx.get("x-test-key");
      ctx.state.principal = {
        kind: "key",
        key: {
          id: keyId,
          name: "t",
          prefix: "sk-t",
          teamId,
          scopes: ["*"],
          expiresAt: null,
          revokedAt: null,
          allowedModels: null,
          budgetUsdPerMonth: null,
          createdAt: "",
          rotatedFrom: null,
          rotationRoot: null,
          limits,
        },
        teamLimits: teamId ? (JSON.parse(ctx.get("x-test-team-limits") || "null") ?? NONE) : null,
      };
      ctx.state.usage.keyId = keyId;
      ctx.state.usage.teamId = teamId;
    }
    ctx.state.chat = chat;
    ctx.state.usage.requestedModel = chat.model;
    ctx.state.usage.stream = chat.stream === true;
    ctx.state.promptTokens = PROMPT;
    ctx.state.completionAllowance = chat.max_tokens ?? undefined;
    return next();
  };

  const upstream: Middleware<ProxyState> = async (ctx) => {
    calls++;
    const chat = ctx.state.chat!;
    const usage = ctx.state.usage;
    if (behaviour === "fail") throw new UpstreamError("The upstream failed.");
    if (behaviour === "left-before-send" || behaviour === "left-after-send") {
      // As the real upstream stage reports it: the deployment that has the request, and the cancelled call.
      if (behaviour === "left-after-send")
        ctx.state.sentTo = { name: chat.model, provider: "p" } as DeploymentConfig;
      throw new ClientClosedError();
    }
    if (behaviour === "json") {
      const body = completion(chat.model);
      usage.promptTokens = body.usage!.prompt_tokens;
      usage.completionTokens = body.usage!.completion_tokens;
      ctx.state.result = { kind: "json", body };
      return;
    }
    const list = chunks(chat.model, behaviour !== "stream-error");
    const mode = behaviour;
    // As the real upstream stage meters a stream: characters seen, and whether the provider reported usage.
    const streamed: { chars: number; reported: boolean } = (ctx.state.streamed = {
      chars: 0,
      reported: false,
    });
    async function* gen(): AsyncGenerator<ChatCompletionChunk> {
      for (const [i, c] of list.entries()) {
        if (mode === "stream-error" && i === 2) throw new UpstreamError("The upstream stream broke.");
        if (mode === "slow-stream") await new Promise((r) => setTimeout(r, 150));
        if (c.usage) {
          usage.promptTokens = c.usage.prompt_tokens;
          usage.completionTokens = c.usage.completion_tokens;
          streamed.reported = true;
        }
        for (const ch of c.choices) streamed.chars += ch.delta.content?.length ?? 0;
        yield c;
      }
    }
    ctx.state.result = {
      kind: "stream",
      chunks: gen(),
      includeUsage: chat.stream_options?.include_usage === true,
    };
  };

  const app = new Koa<ProxyState>();
  app.silent = true;
  app.use(createRequestContext({ log, usageSink: sink, isDraining: () => false }));
  app.use(createErrorHandler());
  const router = new Router<ProxyState>();
  router.post(
    "/v1/chat/completions",
    setup,
    createRespond(),
    createRateLimit({ config, limiter }),
    createCache({ config, cache }),
    upstream,
  );
  app.use(router.routes());
  const server = http.createServer(app.callback());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`,
    rows,
    upstreamCalls: () => calls,
    behave: (b) => (behaviour = b),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Who {
  key: string;
  team?: string;
  keyLimits?: Partial<Budget>;
  teamLimits?: Partial<Budget>;
  master?: boolean;
  cacheControl?: string;
}

async function post(h: Harness, who: Who, body: Record<string, unknown>, signal?: AbortSignal) {
  const headers: Record<string, string> = { "content-type": "application/json", "x-test-key": who.key };
  if (who.team) headers["x-test-team"] = who.team;
  if (who.keyLimits) headers["x-test-key-limits"] = JSON.stringify({ ...NONE, ...who.keyLimits });
  if (who.teamLimits) headers["x-test-team-limits"] = JSON.stringify({ ...NONE, ...who.teamLimits });
  if (who.master) headers["x-test-master"] = "1";
  if (who.cacheControl) headers["cache-control"] = who.cacheControl;
  const res = await fetch(h.url, { method: "POST", headers, body: JSON.stringify(body), signal });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

const chatBody = (extra: Record<string, unknown> = {}) => ({
  model: "m",
  messages: [{ role: "user", content: `hi ${crypto.randomUUID()}` }],
  ...extra,
});

async function waitFor(check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

let redis: Redis;
beforeAll(() => {
  redis = new Redis(SHARED_REDIS_URL);
});
afterAll(async () => {
  await redis.quit();
});

const backends: Array<[string, () => { limiter: RateLimiter; cache: ResponseCache }]> = [
  ["in-process", () => ({ limiter: new MemoryRateLimiter(), cache: new MemoryResponseCache() })],
  [
    "redis",
    () => ({
      limiter: new RedisRateLimiter({ client: redis, prefix: `t${crypto.randomUUID().slice(0, 8)}` }),
      cache: new RedisResponseCache({ client: redis, log, prefix: `test:${crypto.randomUUID()}:` }),
    }),
  ],
];

describe.each(backends)("stages with %s backends", (_name, make) => {
  let h: Harness;
  beforeEach(async (ctx) => {
    const base = loadConfig({ env: { CACHE_ENABLED: "true" } });
    const config = { ...base, cache: { ...base.cache, ttlSeconds: 60 } } as Config;
    const { limiter, cache } = make();
    h = await startHarness(config, limiter, cache);
    ctx.onTestFinished(() => h.close());
  });

  describe("rate limit", () => {
    it("429 names the budget and scope, with Retry-After and x-ratelimit-* headers; the row is recorded", async () => {
      const who = { key: crypto.randomUUID(), keyLimits: { requestsPerMinute: 1 } };
      const ok = await post(h, who, chatBody());
      expect(ok.status).toBe(200);
      expect(ok.headers.get("x-ratelimit-limit-requests")).toBe("1");
      expect(ok.headers.get("x-ratelimit-remaining-requests")).toBe("0");
      expect(ok.headers.get("x-ratelimit-reset-requests")).toMatch(/^(1m[01]s|[0-9]+s)$/);

      const limited = await post(h, who, chatBody());
      expect(limited.status).toBe(429);
      expect(limited.json()).toEqual({
        error: {
          message: expect.stringContaining("key's requests_per_minute budget (limit 1)"),
          type: "rate_limit_error",
          code: "rate_limit_exceeded",
          param: "requests_per_minute",
        },
      });
      const retryAfter = Number(limited.headers.get("retry-after"));
      expect(retryAfter).toBeGreaterThanOrEqual(60);
      expect(retryAfter).toBeLessThanOrEqual(61);
      expect(Number(limited.headers.get("retry-after-ms"))).toBeGreaterThan(59_000);
      expect(limited.headers.get("x-ratelimit-remaining-requests")).toBe("0");
      await waitFor(() => h.rows.length === 2);
      expect(h.rows.map((r) => [r.status, r.errorCode])).toEqual([
        [200, null],
        [429, "rate_limit_exceeded"],
      ]);
      expect(h.upstreamCalls()).toBe(1);
    });

    it("a request no budget can ever admit gets its 429 without Retry-After (waiting would not help)", async () => {
      const cases = [
        { keyLimits: { tokensPerMinute: 1000 }, max_tokens: 5000, budget: "tokens_per_minute" },
        { keyLimits: { tokensPerDay: 1000 }, max_tokens: 5000, budget: "tokens_per_day" },
        { keyLimits: { requestsPerMinute: 0 }, max_tokens: 10, budget: "requests_per_minute" },
      ];
      for (const c of cases) {
        const r = await post(
          h,
          { key: crypto.randomUUID(), keyLimits: c.keyLimits },
          chatBody({ max_tokens: c.max_tokens }),
        );
        expect(r.status).toBe(429);
        expect(r.json().error.param).toBe(c.budget);
        expect(r.headers.get("retry-after")).toBeNull();
        expect(r.headers.get("retry-after-ms")).toBeNull();
      }
      // Never-fits wins over an exhausted budget with a longer wait (the SDK would wait 61 s for this same 429).
      const both = { key: crypto.randomUUID(), keyLimits: { requestsPerMinute: 1, tokensPerMinute: 100 } };
      expect((await post(h, both, chatBody({ max_tokens: 5 }))).status).toBe(200);
      const masked = await post(h, both, chatBody({ max_tokens: 500 }));
      expect(masked.status).toBe(429);
      expect(masked.json().error.param).toBe("tokens_per_minute");
      expect(masked.json().error.message).toContain("Lower max_tokens");
      expect(masked.headers.get("retry-after")).toBeNull();
      // One that fits once the window moves on keeps its Retry-After.
      const who = { key: crypto.randomUUID(), keyLimits: { requestsPerMinute: 1 } };
      expect((await post(h, who, chatBody())).status).toBe(200);
      const later = await post(h, who, chatBody());
      expect(later.status).toBe(429);
      expect(Number(later.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(h.upstreamCalls()).toBe(2); // the two admitted requests
    });

    it("the team's budget is named when the team is exhausted", async () => {
      const team = crypto.randomUUID();
      const teamLimits = { tokensPerMinute: 1000 };
      expect(
        (await post(h, { key: crypto.randomUUID(), team, teamLimits }, chatBody({ max_tokens: 900 }))).status,
      ).toBe(200);
      const r = await post(h, { key: crypto.randomUUID(), team, teamLimits }, chatBody({ max_tokens: 990 }));
      expect(r.status).toBe(429);
      expect(r.json().error.message).toContain("team's tokens_per_minute budget");
    });

    it("reserves prompt + max_tokens and reconciles to the real usage (JSON)", async () => {
      const who = { key: crypto.randomUUID(), keyLimits: { tokensPerMinute: 1000 } };
      const first = await post(h, who, chatBody({ max_tokens: 500 }));
      // Reserved 10 + 500 at admission.
      expect(first.headers.get("x-ratelimit-remaining-tokens")).toBe("490");
      const second = await post(h, who, chatBody({ max_tokens: 500 }));
      // The first was settled at 15 real tokens: 1000 - 15 - 510.
      expect(second.headers.get("x-ratelimit-remaining-tokens")).toBe("475");
    });

    it("reconciles streams once they end", async () => {
      h.behave("stream");
      const who = { key: crypto.randomUUID(), keyLimits: { tokensPerMinute: 1000 } };
      const first = await post(h, who, chatBody({ max_tokens: 500, stream: true }));
      expect(first.text).toContain("data: [DONE]");
      const second = await post(h, who, chatBody({ max_tokens: 500, stream: true }));
      expect(second.headers.get("x-ratelimit-remaining-tokens")).toBe("475");
    });

    it("releases the reservation when the upstream fails; the request still counts", async () => {
      h.behave("fail");
      const who = { key: crypto.randomUUID(), keyLimits: { tokensPerMinute: 1000, requestsPerMinute: 5 } };
      expect((await post(h, who, chatBody({ max_tokens: 500 }))).status).toBe(502);
      h.behave("json");
      const next = await post(h, who, chatBody({ max_tokens: 500 }));
      expect(next.headers.get("x-ratelimit-remaining-tokens")).toBe("490");
      expect(next.headers.get("x-ratelimit-remaining-requests")).toBe("3");
    });

    it("releases the reservation when a stream breaks before any usage", async () => {
      h.behave("stream-error");
      const who = { key: crypto.randomUUID(), keyLimits: { tokensPerMinute: 1000 } };
      const broken = await post(h, who, chatBody({ max_tokens: 500, stream: true }));
      expect(broken.text).toContain('"code":"upstream_error"');
      h.behave("json");
      const next = await post(h, who, chatBody({ max_tokens: 500 }));
      expect(next.headers.get("x-ratelimit-remaining-tokens")).toBe("490");
    });

    it("a client that leaves before its request went upstream gets the tokens back; after, the reservation stands", async () => {
      const who = { key: crypto.randomUUID(), keyLimits: { tokensPerMinute: 1000 } };
      h.behave("left-before-send");
      expect((await post(h, who, chatBody({ max_tokens: 300 }))).status).toBe(499);
      h.behave("json");
      // Nothing held by the first: this one reserves 10 + 300 and is settled at 15.
      expect(
        (await post(h, who, chatBody({ max_tokens: 300 }))).headers.get("x-ratelimit-remaining-tokens"),
      ).toBe("690");
      h.behave("left-after-send");
      expect((await post(h, who, chatBody({ max_tokens: 300 }))).status).toBe(499);
      h.behave("json");
      // The provider had it and bills it: its 310 stay. 1000 - 15 - 310 - 310 (this one).
      expect(
        (await post(h, who, chatBody({ max_tokens: 300 }))).headers.get("x-ratelimit-remaining-tokens"),
      ).toBe("365");
    });

    it("keeps the reservation of a stream the client cuts before the provider's usage (not the row's estimate)", async () => {
      h.behave("slow-stream");
      const who = { key: crypto.randomUUID(), keyLimits: { tokensPerMinute: 1000 } };
      await leaveStreamAfter(
        h.url,
        {
          headers: {
            "x-test-key": who.key,
            "x-test-key-limits": JSON.stringify({ ...NONE, ...who.keyLimits }),
          },
          body: chatBody({ max_tokens: 500, stream: true }),
        },
        "Hello",
      );
      // The row gets its estimate; the limiter keeps the 510 reserved.
      await waitFor(() => h.rows.some((r) => r.keyId === who.key));
      expect(h.rows.find((r) => r.keyId === who.key)!.errorCode).toBe("client_closed_request");
      h.behave("json");
      await new Promise((r) => setTimeout(r, 300)); // the stream's settling runs once it is closed
      const next = await post(h, who, chatBody({ max_tokens: 5 }));
      // 1000 - 510 (the cut stream) - 15 (this request, reserved 10 + 5).
      expect(next.headers.get("x-ratelimit-remaining-tokens")).toBe("475");
    });

    it("does not limit the master key", async () => {
      const who = { key: "", master: true, keyLimits: { requestsPerMinute: 0 } };
      const r = await post(h, who, chatBody());
      expect(r.status).toBe(200);
      expect(r.headers.get("x-ratelimit-limit-requests")).toBeNull();
    });
  });

  describe("cache", () => {
    it("a hit is served without the upstream, flagged, with zero provider tokens, and still counts as a request", async () => {
      const team = crypto.randomUUID();
      const who = {
        key: crypto.randomUUID(),
        team,
        keyLimits: { requestsPerMinute: 2, tokensPerMinute: 5000 },
      };
      const body = chatBody({ temperature: 0 });
      const miss = await post(h, who, body);
      expect(miss.headers.get("x-cache")).toBe("miss");
      // Another key of the same team polls until the background store has landed.
      await waitFor(
        async () =>
          (await post(h, { key: crypto.randomUUID(), team }, body)).headers.get("x-cache") === "hit",
      );
      const calls = h.upstreamCalls();
      const hit = await post(h, who, body);
      expect(hit.status).toBe(200);
      expect(hit.headers.get("x-cache")).toBe("hit");
      expect(hit.json()).toEqual(miss.json());
      expect(h.upstreamCalls()).toBe(calls);
      // The hit was settled at 0 tokens: only the miss's 15 real tokens remain charged.
      expect(hit.headers.get("x-ratelimit-remaining-tokens")).toBe(String(5000 - 15 - (PROMPT + 1024)));
      const limited = await post(h, who, body);
      expect(limited.status).toBe(429);
      await waitFor(() => h.rows.filter((r) => r.keyId === who.key).length === 3);
      const rows = h.rows.filter((r) => r.keyId === who.key);
      expect(rows.map((r) => [r.cacheHit, r.promptTokens, r.completionTokens])).toEqual([
        [false, 12, 3],
        [true, 0, 0],
        [false, 0, 0],
      ]);
    });

    it("a changed temperature misses; team A never hits team B's entry", async () => {
      const body = chatBody({ temperature: 0 });
      const a = { key: crypto.randomUUID(), team: "team-a" };
      const b = { key: crypto.randomUUID(), team: "team-b" };
      expect((await post(h, a, body)).headers.get("x-cache")).toBe("miss");
      await waitFor(
        async () =>
          (await post(h, { ...a, key: crypto.randomUUID() }, body)).headers.get("x-cache") === "hit",
      );
      expect((await post(h, a, { ...body, temperature: 0.7 })).headers.get("x-cache")).toBe("miss");
      expect((await post(h, b, body)).headers.get("x-cache")).toBe("miss");
    });

    it("Cache-Control: no-cache skips the read, no-store skips the write", async () => {
      const who = { key: crypto.randomUUID() };
      const body = chatBody();
      const first = await post(h, { ...who, cacheControl: "no-store" }, body);
      expect(first.headers.get("x-cache")).toBe("miss");
      await new Promise((r) => setTimeout(r, 100));
      expect((await post(h, who, body)).headers.get("x-cache")).toBe("miss");
      await waitFor(async () => (await post(h, who, body)).headers.get("x-cache") === "hit");
      const calls = h.upstreamCalls();
      const bypass = await post(h, { ...who, cacheControl: "no-cache" }, body);
      expect(bypass.headers.get("x-cache")).toBe("bypass");
      expect(h.upstreamCalls()).toBe(calls + 1);
    });

    it("a completed stream is replayed with identical content and framing", async () => {
      h.behave("stream");
      const who = { key: crypto.randomUUID() };
      const body = chatBody({ stream: true, stream_options: { include_usage: true } });
      const miss = await post(h, who, body);
      expect(miss.headers.get("x-cache")).toBe("miss");
      let hit = miss;
      await waitFor(async () => {
        hit = await post(h, who, body);
        return hit.headers.get("x-cache") === "hit";
      });
      expect(hit.headers.get("content-type")).toBe(miss.headers.get("content-type"));
      expect(hit.text).toBe(miss.text);
      expect(hit.text.match(/^data: /gm)).toHaveLength(6);
      // Without include_usage the replay drops the usage chunk, exactly as a live stream would.
      const plain = await post(h, who, { ...body, stream_options: undefined });
      expect(plain.headers.get("x-cache")).toBe("hit");
      expect(plain.text).not.toContain('"usage"');
      expect(plain.text.match(/^data: /gm)).toHaveLength(5);
    });

    it("an errored stream is never stored", async () => {
      h.behave("stream-error");
      const who = { key: crypto.randomUUID() };
      const body = chatBody({ stream: true });
      await post(h, who, body);
      h.behave("stream");
      await new Promise((r) => setTimeout(r, 100));
      expect((await post(h, who, body)).headers.get("x-cache")).toBe("miss");
    });

    it("a stream cut by the client is never stored", async () => {
      h.behave("slow-stream");
      const who = { key: crypto.randomUUID() };
      const body = chatBody({ stream: true });
      const abort = new AbortController();
      const res = await fetch(h.url, {
        method: "POST",
        headers: { "content-type": "application/json", "x-test-key": who.key },
        body: JSON.stringify(body),
        signal: abort.signal,
      });
      const reader = res.body!.getReader();
      await reader.read();
      abort.abort();
      await waitFor(() => h.rows.some((r) => r.keyId === who.key));
      await new Promise((r) => setTimeout(r, 800));
      h.behave("stream");
      expect((await post(h, who, body)).headers.get("x-cache")).toBe("miss");
    });
  });
});

describe("cache TTL through the stage", () => {
  it("an entry expires after CACHE_TTL", async () => {
    const base = loadConfig({ env: { CACHE_ENABLED: "true" } });
    const config = { ...base, cache: { ...base.cache, ttlSeconds: 0.3 } } as Config;
    const h = await startHarness(config, null, new MemoryResponseCache());
    try {
      const who = { key: crypto.randomUUID() };
      const body = chatBody();
      expect((await post(h, who, body)).headers.get("x-cache")).toBe("miss");
      expect((await post(h, who, body)).headers.get("x-cache")).toBe("hit");
      await new Promise((r) => setTimeout(r, 450));
      expect((await post(h, who, body)).headers.get("x-cache")).toBe("miss");
    } finally {
      await h.close();
    }
  });
});
