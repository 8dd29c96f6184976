/**
 * End to end through the real app and its real wiring (service/deps.ts picks Redis when REDIS_URL is set; real
 * PostgreSQL, real Redis, fake LLM upstream): the official openai SDK honouring our 429, the response cache over
 * HTTP, and a Redis outage under load.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI from "openai";
import Redis from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Budget } from "../../../service/config";
import { createLogger } from "../../../service/logger";
import { MemoryRateLimiter } from "../../../service/adapters/memory-limiter";
import { RedisRateLimiter } from "../../../service/adapters/redis-limiter";
import { createRedisClient, closeRedis } from "../../../service/adapters/redis";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";
import { SHARED_REDIS_URL, startRedis, type ThrowawayRedis } from "../../helpers/redis";
import { leaveStreamAfter } from "../../helpers/stream";

const log = createLogger("silent");
const NONE: Budget = { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null };

async function setKeyLimits(proxy: TestProxy, id: string, limits: Partial<Budget>): Promise<void> {
  await proxy.deps.keys.update(id, { limits: { ...NONE, ...limits } });
}

function chat(
  proxy: TestProxy,
  key: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  return fetch(`${proxy.baseURL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: "gpt-4o-mini", ...body }),
  });
}

async function metric(proxy: TestProxy, name: string): Promise<number | null> {
  const text = await (await fetch(`${proxy.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name));
  return line ? Number(line.split(" ").at(-1)) : null;
}

let upstream: FakeUpstream;
beforeAll(async () => {
  upstream = await startFakeUpstream();
});
afterAll(async () => {
  await upstream?.close();
});

describe("the official openai SDK (default retries)", () => {
  let proxy: TestProxy;
  // The limiter's clock runs `offset` ms off the real one, so a budget can be used up "58 s ago".
  let offset = 0;
  let redis: Redis;

  beforeAll(async () => {
    redis = createRedisClient({ url: SHARED_REDIS_URL, log });
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      adjust: async (deps) => {
        await deps.rateLimiter?.close();
        deps.rateLimiter = new RedisRateLimiter({
          client: redis,
          prefix: `e2e${crypto.randomUUID().slice(0, 8)}`,
          now: () => Date.now() + offset,
        });
      },
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await closeRedis(redis);
  });

  it("gets a 429, waits per Retry-After and succeeds", async () => {
    const { id, key } = await proxy.createKey();
    await setKeyLimits(proxy, id, { requestsPerMinute: 1 });
    const client = new OpenAI({ apiKey: key, baseURL: proxy.baseURL });
    const before = upstream.requests.length;

    offset = -58_000;
    await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "first" }],
    });
    offset = 0;

    // The raw response: what the SDK sees on its first attempt.
    const probe = await chat(proxy, key, { messages: [{ role: "user", content: "probe" }] });
    expect(probe.status).toBe(429);
    const retryAfterMs = Number(probe.headers.get("retry-after-ms"));
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(4_000);
    expect(Number(probe.headers.get("retry-after"))).toBe(Math.ceil(retryAfterMs / 1000));

    const started = Date.now();
    const res = await client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "second" }] })
      .withResponse();
    expect(res.data.choices[0].message.content).toBe("Echo: second");
    // It waited for the window rather than giving up or hammering: at least the advertised wait.
    expect(Date.now() - started).toBeGreaterThanOrEqual(retryAfterMs - 1_000);
    expect(upstream.requests.length - before).toBe(2);
    const rows = await proxy.waitForUsageRows(4);
    // first (200), probe (429), the SDK's first attempt (429) and its retry (200).
    expect(
      rows
        .filter((r) => r.key_id === id)
        .map((r) => r.status)
        .sort(),
    ).toEqual([200, 200, 429, 429]);
  });
});

describe("response cache end to end (Redis)", () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      env: { REDIS_URL: SHARED_REDIS_URL, CACHE_ENABLED: "true", CACHE_TTL_SECONDS: "60" },
    });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  async function untilHit(key: string, body: Record<string, unknown>): Promise<Response> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const res = await chat(proxy, key, body);
      if (res.headers.get("x-cache") === "hit" || Date.now() > deadline) return res;
      await res.arrayBuffer();
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it("JSON: miss then hit, same body, usage row flagged with zero tokens", async () => {
    const { id, key } = await proxy.createKey();
    const body = { messages: [{ role: "user", content: `cache me ${crypto.randomUUID()}` }], temperature: 0 };
    const before = upstream.requests.length;
    const miss = await chat(proxy, key, body);
    expect(miss.headers.get("x-cache")).toBe("miss");
    const missBody = await miss.json();
    const hit = await untilHit(key, body);
    expect(hit.headers.get("x-cache")).toBe("hit");
    expect(await hit.json()).toEqual(missBody);
    expect(upstream.requests.length - before).toBe(1);
    const changed = await chat(proxy, key, { ...body, temperature: 1 });
    expect(changed.headers.get("x-cache")).toBe("miss");
    await changed.arrayBuffer();
    const rows = (await proxy.waitForUsageRows(3)).filter((r) => r.key_id === id);
    const hitRow = rows.find((r) => r.cache_hit);
    expect(hitRow).toMatchObject({ status: 200, prompt_tokens: 0, completion_tokens: 0 });
  });

  it("streams: a hit replays the same SSE bytes (framing, chunks, [DONE])", async () => {
    const { key } = await proxy.createKey();
    const body = {
      stream: true,
      messages: [{ role: "user", content: `stream cache ${crypto.randomUUID()} a b c` }],
    };
    const miss = await chat(proxy, key, body);
    expect(miss.headers.get("x-cache")).toBe("miss");
    const missText = await miss.text();
    const hit = await untilHit(key, body);
    expect(hit.headers.get("x-cache")).toBe("hit");
    expect(hit.headers.get("content-type")).toBe(miss.headers.get("content-type"));
    const hitText = await hit.text();
    expect(hitText).toBe(missText);
    expect(hitText.endsWith("data: [DONE]\n\n")).toBe(true);
  });

  it("a different team (or a key without one) never receives this team's entry", async () => {
    const teamA = await proxy.deps.teams.create({ name: `a-${crypto.randomUUID()}`, limits: NONE });
    const teamB = await proxy.deps.teams.create({ name: `b-${crypto.randomUUID()}`, limits: NONE });
    const a1 = await proxy.createKey({ teamId: teamA.id });
    const a2 = await proxy.createKey({ teamId: teamA.id });
    const b1 = await proxy.createKey({ teamId: teamB.id });
    const body = { messages: [{ role: "user", content: `tenant ${crypto.randomUUID()}` }] };
    await (await chat(proxy, a1.key, body)).arrayBuffer();
    expect((await untilHit(a2.key, body)).headers.get("x-cache")).toBe("hit");
    expect((await chat(proxy, b1.key, body)).headers.get("x-cache")).toBe("miss");
  });
});

describe("Redis killed during load (fail-open)", () => {
  let proxy: TestProxy;
  let server: ThrowawayRedis;
  let inspector: Redis;

  beforeAll(async () => {
    server = await startRedis();
    inspector = new Redis(server.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false });
    inspector.on("error", () => undefined);
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      env: { REDIS_URL: server.url, CACHE_ENABLED: "true" },
    });
  });
  afterAll(async () => {
    inspector?.disconnect();
    await proxy?.close();
    await server?.stop();
  });

  it("no 5xx over ~20 s with Redis down in the middle; fallback visible in /metrics; shared again after restart", async () => {
    const { id, key } = await proxy.createKey();
    await setKeyLimits(proxy, id, { requestsPerMinute: 1_000_000, tokensPerMinute: 1_000_000_000 });
    const redisKey = `{llmproxy:k:${id}}`;
    const statuses = new Map<number, number>();
    let stop = false;
    const worker = async (w: number) => {
      let i = 0;
      while (!stop) {
        const res = await chat(proxy, key, {
          messages: [{ role: "user", content: `load ${w} ${i++ % 5}` }],
          ...(i % 3 === 0 ? { stream: true } : {}),
        });
        await res.arrayBuffer();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    };
    const load = Promise.all([0, 1, 2, 3].map(worker));

    await new Promise((r) => setTimeout(r, 5_000));
    expect(Number(await inspector.hget(redisKey, "R"))).toBeGreaterThan(0);
    expect(await metric(proxy, 'llmproxy_ratelimit_fallback_active{mode="fail-open"}')).toBe(0);

    await server.kill();
    await new Promise((r) => setTimeout(r, 7_000));
    expect(await metric(proxy, 'llmproxy_ratelimit_fallback_active{mode="fail-open"}')).toBe(1);
    const duringOutage = [...statuses.values()].reduce((a, b) => a + b, 0);

    await server.restart();
    await new Promise((r) => setTimeout(r, 8_000));
    stop = true;
    await load;

    expect(await metric(proxy, 'llmproxy_ratelimit_fallback_active{mode="fail-open"}')).toBe(0);
    const transitions = await metric(
      proxy,
      'llmproxy_ratelimit_fallback_transitions_total{direction="to_shared"}',
    );
    expect(transitions).toBeGreaterThanOrEqual(1);
    // Shared limiting again: the new (empty) Redis counts this key's requests.
    const fresh = new Redis(server.url);
    try {
      expect(Number(await fresh.hget(redisKey, "R"))).toBeGreaterThan(0);
    } finally {
      fresh.disconnect();
    }
    const total = [...statuses.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(duringOutage);
    expect([...statuses.keys()]).toEqual([200]);
  });
});

describe("Redis unavailable (fail-open): each process enforces its share", () => {
  it("a request larger than the share passes alone; the next one's 429 names the share and a Retry-After that holds", async () => {
    const server = await startRedis();
    const proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      env: { REDIS_URL: server.url, REPLICAS: "6", WORKERS: "2" },
    });
    try {
      const { id, key } = await proxy.createKey();
      // 6,000 tokens/minute over 6 replicas × 2 workers: 500 for this process while Redis is away.
      await setKeyLimits(proxy, id, { tokensPerMinute: 6000 });
      const ask = () =>
        chat(proxy, key, { max_tokens: 1000, messages: [{ role: "user", content: "Tell me a story." }] });
      await server.kill();
      const first = await ask();
      expect(first.status).toBe(200);
      await first.arrayBuffer();
      const second = await ask();
      expect(second.status).toBe(429);
      expect(Number(second.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(Number(second.headers.get("retry-after"))).toBeLessThanOrEqual(61);
      expect(second.headers.get("x-ratelimit-limit-tokens")).toBe("500");
      const error = ((await second.json()) as { error: { message: string; param: string } }).error;
      expect(error.param).toBe("tokens_per_minute");
      expect(error.message).toContain("(limit 6000; this process's share: 500");
    } finally {
      await proxy.close();
      await server.stop();
    }
  });
});

describe("key rotation (Redis)", () => {
  it("the replacement goes on in the windows of the key it replaced, through any number of rotations", async () => {
    const proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      env: { REDIS_URL: SHARED_REDIS_URL },
    });
    const admin = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${proxy.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${proxy.masterKey}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return (await res.json()) as { id: string; key: string };
    };
    const status = async (key: string) => {
      const res = await chat(proxy, key, { messages: [{ role: "user", content: "x" }] });
      await res.arrayBuffer();
      return res.status;
    };
    try {
      const old = await admin("POST", "/internal/keys", { name: "rotating", requests_per_minute: 3 });
      expect([await status(old.key), await status(old.key)]).toEqual([200, 200]);
      const second = await admin("POST", `/internal/keys/${old.id}/rotate`);
      expect(await status(second.key)).toBe(200);
      // 3 requests this minute by one holder: the budget is used, whichever secret it presents.
      expect(await status(second.key)).toBe(429);
      const third = await admin("POST", `/internal/keys/${second.id}/rotate`);
      expect(await status(third.key)).toBe(429);
    } finally {
      await proxy.close();
    }
  });
});

describe("in-process limiter in the app (embedded default)", () => {
  /** A proxy in front of the fake upstream whose limiter is the in-process one. */
  const startMemoryLimitedProxy = () =>
    startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      adjust: async (deps) => {
        await deps.rateLimiter?.close();
        deps.rateLimiter = new MemoryRateLimiter();
      },
    });

  it("limits without Redis", async () => {
    const proxy = await startMemoryLimitedProxy();
    try {
      const { id, key } = await proxy.createKey();
      await setKeyLimits(proxy, id, { requestsPerMinute: 2 });
      const statuses = [];
      for (let i = 0; i < 3; i++) {
        const res = await chat(proxy, key, { messages: [{ role: "user", content: "x" }] });
        await res.arrayBuffer();
        statuses.push(res.status);
      }
      expect(statuses).toEqual([200, 200, 429]);
    } finally {
      await proxy.close();
    }
  });

  it("an answer without usage (older vLLM, Ollama) is charged an estimate, not only its prompt", async () => {
    // 2,000 characters of answer and no `usage` object.
    const answer = "word ".repeat(400);
    const bare = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            id: "chatcmpl-nousage",
            object: "chat.completion",
            created: 1,
            model: "m",
            choices: [{ index: 0, message: { role: "assistant", content: answer }, finish_reason: "stop" }],
          }),
        );
      });
    });
    await new Promise<void>((resolve) => bare.listen(0, "127.0.0.1", resolve));
    const proxy = await startProxy({
      configYaml: upstreamConfig({ bare: `http://127.0.0.1:${(bare.address() as AddressInfo).port}/v1` }, [
        { name: "gpt-4o-mini", provider: "bare" },
      ]),
      adjust: async (deps) => {
        await deps.rateLimiter?.close();
        deps.rateLimiter = new MemoryRateLimiter();
      },
    });
    try {
      const { id, key } = await proxy.createKey();
      await setKeyLimits(proxy, id, { tokensPerMinute: 1000 });
      const ask = () =>
        chat(proxy, key, { max_tokens: 600, messages: [{ role: "user", content: "Tell me a story." }] });
      const first = await ask();
      expect(first.status).toBe(200);
      await first.arrayBuffer();
      // ~10 prompt tokens + 500 estimated for the answer stay charged: the next 610-token reservation does not fit.
      const second = await ask();
      expect(second.status).toBe(429);
      await second.arrayBuffer();
      const rows = await proxy.waitForUsageRows(2);
      const served = rows.find((r) => r.status === 200)!;
      expect(Number(served.completion_tokens)).toBe(500);
      expect(Number(served.prompt_tokens)).toBeGreaterThan(0);
    } finally {
      await proxy.close();
      await new Promise((r) => bare.close(r));
    }
  });

  it("a stream the client leaves midway keeps its whole reservation (the provider goes on generating and billing)", async () => {
    // Streams one chunk, then goes quiet until the proxy hangs up; a JSON request gets a plain answer.
    const chunk = (delta: object) =>
      `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`;
    const slow = http.createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d));
      req.on("end", () => {
        if (!JSON.parse(body).stream) {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              id: "c",
              object: "chat.completion",
              created: 1,
              model: "m",
              choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
              usage: { prompt_tokens: 10, completion_tokens: 1, total_tokens: 11 },
            }),
          );
          return;
        }
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(chunk({ role: "assistant", content: "Hello" }));
      });
    });
    await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
    const proxy = await startProxy({
      configYaml: upstreamConfig({ slow: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/v1` }, [
        { name: "gpt-4o-mini", provider: "slow" },
      ]),
      adjust: async (deps) => {
        await deps.rateLimiter?.close();
        deps.rateLimiter = new MemoryRateLimiter();
      },
    });
    try {
      const { id, key } = await proxy.createKey();
      await setKeyLimits(proxy, id, { tokensPerMinute: 10_000 });
      const messages = [{ role: "user", content: "Tell me a long story." }];
      await leaveStreamAfter(
        `${proxy.baseURL}/chat/completions`,
        {
          headers: { authorization: `Bearer ${key}` },
          body: { model: "gpt-4o-mini", max_tokens: 5000, stream: true, messages },
        },
        "Hello",
      );
      const [row] = await proxy.waitForUsageRows(1);
      expect(row.error_code).toBe("client_closed_request");
      await new Promise((r) => setTimeout(r, 200)); // the stream's settling runs once the upstream call is cancelled
      const next = await chat(proxy, key, { max_tokens: 5, messages });
      expect(next.status).toBe(200);
      await next.arrayBuffer();
      // The cut stream's ~5,000 reserved tokens stay charged (not the row's estimate of a few tokens).
      expect(Number(next.headers.get("x-ratelimit-remaining-tokens"))).toBeLessThan(5000);
    } finally {
      await proxy.close();
      await new Promise((r) => slow.close(r));
    }
  });

  it("every admitted answer carries the x-ratelimit-* headers: JSON, a stream, an upstream failure; a 429 its own", async () => {
    const proxy = await startMemoryLimitedProxy();
    try {
      const { id, key } = await proxy.createKey();
      await setKeyLimits(proxy, id, { requestsPerMinute: 3 });
      const messages = [{ role: "user", content: "x" }];
      const seen: Array<[number, string | null, string | null]> = [];
      const record = async (res: Response) => {
        await res.arrayBuffer();
        seen.push([
          res.status,
          res.headers.get("x-ratelimit-limit-requests"),
          res.headers.get("x-ratelimit-remaining-requests"),
        ]);
      };
      await record(await chat(proxy, key, { messages }));
      await record(await chat(proxy, key, { messages, stream: true }));
      upstream.behave({ kind: "status", status: 500 });
      try {
        await record(await chat(proxy, key, { messages }));
      } finally {
        upstream.behave({ kind: "ok" });
      }
      await record(await chat(proxy, key, { messages }));
      expect(seen).toEqual([
        [200, "3", "2"],
        [200, "3", "1"],
        [502, "3", "0"],
        [429, "3", "0"],
      ]);
    } finally {
      await proxy.close();
    }
  });
});
