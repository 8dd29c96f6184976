/**
 * Response cache building blocks: key sensitivity and scoping, the in-process LRU and the Redis cache (TTL, compact
 * encoding, Redis down = miss).
 */
import crypto from "node:crypto";
import Redis from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cacheScope, canonicalJson, chatCacheKey } from "../../../service/lib/cache-key";
import { MemoryResponseCache } from "../../../service/adapters/memory-cache";
import { RedisResponseCache, decodeEntry, encodeEntry } from "../../../service/adapters/redis-cache";
import { createRedisClient, closeRedis } from "../../../service/adapters/redis";
import { createLogger } from "../../../service/logger";
import type { CachedResponse } from "../../../service/ports";
import { SHARED_REDIS_URL, startRedis } from "../../helpers/redis";

const log = createLogger("silent");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const body = (extra: Record<string, unknown> = {}) => ({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Hello" }],
  temperature: 0.2,
  ...extra,
});

const completion: CachedResponse = {
  kind: "json",
  body: {
    id: "chatcmpl-1",
    object: "chat.completion",
    created: 1,
    model: "gpt-4o-mini",
    choices: [{ index: 0, message: { role: "assistant", content: "Hi there" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
  },
};
/** What a read of `completion` returns: the entry and its body's text (see lib/cache-entry.ts). */
const completionRead: CachedResponse = { ...completion, bodyText: JSON.stringify(completion.body) };

describe("cache key", () => {
  const team = "team:a";
  it("an own __proto__ member of the body is part of the key", () => {
    const plain = body();
    const withProto = JSON.parse(
      JSON.stringify(plain).replace(/^\{/, '{"__proto__":{"temperature":2},'),
    ) as Record<string, unknown>;
    expect(Object.hasOwn(withProto, "__proto__")).toBe(true);
    expect(chatCacheKey(team, "json", withProto as never)).not.toBe(chatCacheKey(team, "json", plain));
  });

  it("changes with every output-relevant field", () => {
    const base = chatCacheKey(team, "json", body());
    expect(chatCacheKey(team, "json", body({ temperature: 0.3 }))).not.toBe(base);
    expect(chatCacheKey(team, "json", body({ model: "gpt-4o" }))).not.toBe(base);
    expect(chatCacheKey(team, "json", body({ messages: [{ role: "user", content: "Hello!" }] }))).not.toBe(
      base,
    );
    for (const extra of [
      { top_p: 0.9 },
      { max_tokens: 10 },
      { seed: 1 },
      { stop: ["\n"] },
      { n: 2 },
      { response_format: { type: "json_object" } },
      { tools: [{ type: "function", function: { name: "f" } }] },
      { tool_choice: "none" },
      { some_future_param: true },
    ]) {
      expect(chatCacheKey(team, "json", body(extra)), JSON.stringify(extra)).not.toBe(base);
    }
  });

  it("ignores key order and fields that do not change the output", () => {
    const base = chatCacheKey(team, "json", body());
    const reordered = {
      temperature: 0.2,
      messages: [{ content: "Hello", role: "user" }],
      model: "gpt-4o-mini",
    };
    expect(chatCacheKey(team, "json", reordered)).toBe(base);
    expect(
      chatCacheKey(
        team,
        "json",
        body({
          user: "u-1",
          metadata: { a: "b" },
          store: true,
          safety_identifier: "x",
          prompt_cache_key: "p",
        }),
      ),
    ).toBe(base);
    expect(
      chatCacheKey(team, "stream", body({ stream: true, stream_options: { include_usage: true } })),
    ).toBe(chatCacheKey(team, "stream", body({ stream: true })));
  });

  it("is scoped: per team by default, per key, or global; stream and JSON answers are separate", () => {
    const b = body();
    expect(chatCacheKey("team:a", "json", b)).not.toBe(chatCacheKey("team:b", "json", b));
    expect(chatCacheKey("team:a", "json", b)).not.toBe(chatCacheKey("team:a", "stream", b));
    expect(cacheScope("team", { keyId: "k1", teamId: "t1" })).toBe("team:t1");
    expect(cacheScope("team", { keyId: "k1", teamId: null })).toBe("key:k1");
    expect(cacheScope("key", { keyId: "k1", teamId: "t1" })).toBe("key:k1");
    expect(cacheScope("global", { keyId: "k1", teamId: "t1" })).toBe("global");
    expect(cacheScope("team", { master: true })).toBe("master");
  });

  it("canonical JSON sorts keys at every level and keeps array order", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { y: 1, x: 2 }], c: null }, u: undefined })).toBe(
      '{"a":{"c":null,"d":[3,{"x":2,"y":1}]},"b":1}',
    );
  });

  it("canonical JSON: the same text as sorting every object's keys and serializing, on random values", () => {
    // The reference: the straightforward version (sort every object's keys, serialize each member, join).
    const reference = (value: unknown): string => {
      if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
      if (Array.isArray(value))
        return `[${value.map((v) => (v === undefined ? "null" : reference(v))).join(",")}]`;
      const obj = value as Record<string, unknown>;
      return `{${Object.keys(obj)
        .sort()
        .filter((k) => obj[k] !== undefined)
        .map((k) => `${JSON.stringify(k)}:${reference(obj[k])}`)
        .join(",")}}`;
    };
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const KEYS = ["a", "b", "B", "model", "messages", "é", "10", "9", "z", "_", "content", "role"];
    const gen = (depth: number): unknown => {
      const r = rand();
      if (depth > 3 || r < 0.3) return [null, 1.5, -2, 'x\n"y', true, "", 0][Math.floor(rand() * 7)];
      if (r < 0.6) return Array.from({ length: Math.floor(rand() * 4) }, () => gen(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 5); i > 0; i--)
        o[KEYS[Math.floor(rand() * KEYS.length)]!] = gen(depth + 1);
      if (rand() < 0.2) o.skip = undefined;
      return o;
    };
    for (let i = 0; i < 3000; i++) {
      const v = gen(0);
      expect(canonicalJson(v)).toBe(reference(v));
    }
  });
});

describe("memory cache", () => {
  it("stores, hands out independent copies, and expires after the TTL", async () => {
    const cache = new MemoryResponseCache({ maxEntries: 10 });
    await cache.set("k", completion, 0.15);
    const a = await cache.get("k");
    expect(a).toEqual(completionRead);
    (a!.body as { id: string }).id = "mutated";
    expect((await cache.get("k"))!.body).toEqual(completion.body);
    await sleep(250);
    expect(await cache.get("k")).toBeNull();
  });

  it("is bounded: the least recently used entry goes", async () => {
    const cache = new MemoryResponseCache({ maxEntries: 2 });
    await cache.set("a", completion, 60);
    await cache.set("b", completion, 60);
    await cache.get("a");
    await cache.set("c", completion, 60);
    expect(cache.size()).toBe(2);
    expect(await cache.get("b")).toBeNull();
    expect(await cache.get("a")).not.toBeNull();
  });
});

describe("redis cache", () => {
  let client: Redis;
  beforeAll(() => {
    client = new Redis(SHARED_REDIS_URL);
  });
  afterAll(async () => {
    await client.quit();
  });

  it("round-trips JSON and streams, compressing large entries", async () => {
    const chunks = Array.from({ length: 200 }, (_, i) => ({
      id: "chatcmpl-x",
      object: "chat.completion.chunk" as const,
      created: 1,
      model: "m",
      choices: [{ index: 0, delta: { content: `word${i} ` }, finish_reason: null }],
    }));
    const stream: CachedResponse = { kind: "stream", body: chunks };
    const encoded = encodeEntry(stream);
    expect(String.fromCharCode(encoded[0])).toBe("z");
    expect(encoded.length).toBeLessThan(JSON.stringify(stream).length / 5);
    expect(decodeEntry(encoded)).toEqual(stream);
    expect(String.fromCharCode(encodeEntry(completion)[0])).toBe("j");

    const prefix = `test:${crypto.randomUUID()}:`;
    const cache = new RedisResponseCache({ client, log, prefix });
    await cache.set("s", stream, 60);
    await cache.set("j", completion, 60);
    expect(await cache.get("s")).toEqual(stream);
    expect(await cache.get("j")).toEqual(completionRead);
    expect(await cache.get("missing")).toBeNull();
    await client.del(`${prefix}s`, `${prefix}j`);
  });

  it("stores a body's known text as is (the body object is not read) and hands it back on a read", async () => {
    const text = '{ "id": "chatcmpl-t",\n "choices": [], "n": 1.50 }';
    const prefix = `test:${crypto.randomUUID()}:`;
    for (const cache of [new RedisResponseCache({ client, log, prefix }), new MemoryResponseCache()]) {
      await cache.set("t", { kind: "json", body: { stale: true } as never, bodyText: text }, 60);
      const read = await cache.get("t");
      expect(read!.bodyText).toBe(text);
      expect(read!.body).toEqual(JSON.parse(text));
    }
    // A large text is compressed like any entry, and still read back byte for byte.
    const big = JSON.stringify({ id: "x", content: "word ".repeat(2000) });
    const encoded = encodeEntry({ kind: "json", body: {} as never, bodyText: big });
    expect(String.fromCharCode(encoded[0])).toBe("z");
    expect(decodeEntry(encoded)!.bodyText).toBe(big);
    await client.del(`${prefix}t`);
  });

  it("entries expire after the TTL", async () => {
    const prefix = `test:${crypto.randomUUID()}:`;
    const cache = new RedisResponseCache({ client, log, prefix });
    await cache.set("k", completion, 0.1);
    expect(await cache.get("k")).toEqual(completionRead);
    const ttl = await client.pttl(`${prefix}k`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(100);
    await sleep(200);
    expect(await cache.get("k")).toBeNull();
  });

  it("a stalled Redis costs one request the deadline, then reads are misses at once until the retry time", async () => {
    const server = await startRedis();
    const c = createRedisClient({ url: server.url, log, commandTimeoutMs: 2000 });
    try {
      const cache = new RedisResponseCache({ client: c, log, timeoutMs: 150, retryAfterMs: 600 });
      await new Promise<void>((resolve) => c.once("ready", () => resolve()));
      await cache.set("k", completion, 60);
      server.pause();
      const timed = async () => {
        const t0 = performance.now();
        const value = await cache.get("k");
        return { value, ms: performance.now() - t0 };
      };
      const first = await timed();
      expect(first.value).toBeNull();
      expect(first.ms).toBeGreaterThanOrEqual(140);
      for (let i = 0; i < 5; i++) {
        const next = await timed();
        expect(next.value).toBeNull();
        expect(next.ms).toBeLessThan(50);
      }
      server.resume();
      await new Promise((r) => setTimeout(r, 650));
      expect(await cache.get("k")).toEqual(completionRead);
    } finally {
      server.resume();
      await closeRedis(c);
      await server.stop();
    }
  });

  it("Redis down: reads are misses and writes are skipped, without throwing", async () => {
    const server = await startRedis();
    const c = createRedisClient({ url: server.url, log, commandTimeoutMs: 200 });
    try {
      const cache = new RedisResponseCache({ client: c, log });
      await new Promise<void>((resolve) => c.once("ready", () => resolve()));
      await cache.set("k", completion, 60);
      expect(await cache.get("k")).toEqual(completionRead);
      await server.kill();
      expect(await cache.get("k")).toBeNull();
      await expect(cache.set("k", completion, 60)).resolves.toBeUndefined();
    } finally {
      await closeRedis(c);
      await server.stop();
    }
  });
});
