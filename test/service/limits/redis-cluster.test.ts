/**
 * Redis Cluster (REDIS_CLUSTER=true) against a real throwaway cluster of three masters (test/helpers/redis.ts): the
 * client follows MOVED where a plain client fails, the limiter's admissions stay exact and atomic with keys spread
 * over every node (also with many admissions in one tick, which ioredis auto-pipelines per node), its script is
 * loaded on whichever node owns the slot, the response cache spreads over the nodes, and the proxy limits end to end
 * with no fallback to per-process limiting.
 */
import crypto from "node:crypto";
import { Writable } from "node:stream";
import Redis, { Cluster } from "ioredis";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, type Budget } from "../../../service/config";
import { createLogger } from "../../../service/logger";
import {
  closeRedis,
  clusterOptions,
  clusterSeeds,
  createRedisClient,
  redisEndpoint,
  type RedisClient,
} from "../../../service/adapters/redis";
import { LIMITER_LUA, RedisRateLimiter, scopeKeys } from "../../../service/adapters/redis-limiter";
import { cacheErrors, RedisResponseCache } from "../../../service/adapters/redis-cache";
import { limitedScopes } from "../../../service/adapters/memory-limiter";
import type { Admission, AdmissionRequest, CachedResponse } from "../../../service/ports";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";
import { freePort, startRedisCluster, type ThrowawayRedisCluster } from "../../helpers/redis";

const log = createLogger("silent");
const NONE: Budget = { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null };
const budget = (b: Partial<Budget>): Budget => ({ ...NONE, ...b });
const id = () => crypto.randomUUID();
const prefix = () => `c${id().slice(0, 8)}`;
const LIMITER_SHA = crypto.createHash("sha1").update(LIMITER_LUA).digest("hex");

let cluster: ThrowawayRedisCluster;
/** One plain connection per master, to look at a node directly (as a standalone client would). */
let nodes: Map<number, Redis>;
/** Slot → the port of the master that owns it. */
let owners: number[];
const clients: RedisClient[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster(3);
  nodes = new Map(cluster.ports.map((p) => [p, new Redis(p, "127.0.0.1", { maxRetriesPerRequest: 1 })]));
  owners = new Array<number>(16384);
  const slots = await nodes.get(cluster.ports[0])!.cluster("SLOTS");
  for (const [start, end, [, port]] of slots) owners.fill(Number(port), start, end + 1);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => closeRedis(c)));
  for (const n of nodes?.values() ?? []) n.disconnect();
  await cluster?.stop();
});

async function keySlot(key: string): Promise<number> {
  return Number(await nodes.get(cluster.ports[0])!.cluster("KEYSLOT", key));
}

/** The port of the master that owns `key`. */
async function ownerOf(key: string): Promise<number> {
  return owners[await keySlot(key)];
}

async function ready(client: RedisClient): Promise<RedisClient> {
  if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
  return client;
}

/** A Cluster client built by the factory from one seed node's URL, closed after all tests. */
async function clusterClient(url = cluster.urls[0]): Promise<RedisClient> {
  const client = createRedisClient({ url, cluster: true, log });
  clients.push(client);
  return ready(client);
}

function req(p: Partial<AdmissionRequest>): AdmissionRequest {
  return { keyId: id(), teamId: null, keyBudget: NONE, teamBudget: null, tokens: 1, ...p };
}

function rejected(a: Admission): Extract<Admission, { allowed: false }> {
  if (a.allowed) throw new Error("expected a rejection");
  return a;
}

/** Key ids until every master owns at least `perNode` of their limiter hashes (`{<prefix>:k:<id>}`). */
async function keysOnEveryNode(pfx: string, perNode: number): Promise<string[]> {
  const byNode = new Map<number, string[]>(cluster.ports.map((p) => [p, []]));
  while ([...byNode.values()].some((ids) => ids.length < perNode)) {
    const keyId = id();
    const list = byNode.get(await ownerOf(`{${pfx}:k:${keyId}}`))!;
    if (list.length < perNode) list.push(keyId);
  }
  return [...byNode.values()].flat();
}

describe("configuration", () => {
  it("REDIS_CLUSTER turns cluster mode on; REDIS_URL may then list several seed nodes", () => {
    const seeds = "rediss://:pw@node-a.example:6379, rediss://:pw@node-b.example:6380";
    const config = loadConfig({ env: { REDIS_URL: seeds, REDIS_CLUSTER: "true" } });
    expect(config.redis).toEqual({ url: seeds, tlsCa: null, cluster: true });
    expect(loadConfig({ env: { REDIS_URL: "redis://127.0.0.1:6379" } }).redis.cluster).toBe(false);
    // A comma inside a password is not a separator.
    expect(clusterSeeds("redis://:a,b@h1:7000,redis://h2:7001")).toEqual([
      { host: "h1", port: 7000 },
      { host: "h2", port: 7001 },
    ]);
    expect(redisEndpoint(seeds)).toBe("rediss://node-a.example:6379,rediss://node-b.example:6380");
  });

  it("bad values are config errors naming the key", () => {
    const problems = (env: Record<string, string>) => {
      try {
        loadConfig({ env });
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as ConfigError).problems;
      }
      throw new Error("expected a ConfigError");
    };
    expect(problems({ REDIS_URL: "redis://h:6379", REDIS_CLUSTER: "sometimes" })).toEqual([
      expect.stringMatching(/^env REDIS_CLUSTER: /),
    ]);
    expect(problems({ REDIS_CLUSTER: "true" })).toEqual([
      expect.stringMatching(/^env REDIS_CLUSTER: needs REDIS_URL/),
    ]);
    expect(problems({ REDIS_URL: "redis://a:1,redis://b:2" })).toEqual([
      expect.stringMatching(/^env REDIS_URL: .*REDIS_CLUSTER=true/),
    ]);
    expect(problems({ REDIS_URL: "redis://a:1,rediss://b:2", REDIS_CLUSTER: "1" })).toEqual([
      expect.stringMatching(/^env REDIS_URL: .*all rediss/),
    ]);
  });
});

describe("cluster client", () => {
  it("the standalone guarantees hold: no offline queue, bounded commands, reconnect forever, TLS + CA, credentials", () => {
    const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const o = clusterOptions({ url: "rediss://app:s3cret@cfg.example:6379", tlsCa: pem, log });
    expect(o).toMatchObject({
      enableOfflineQueue: false,
      enableReadyCheck: false,
      enableAutoPipelining: true,
      slotsRefreshTimeout: 2000,
    });
    expect(o.redisOptions).toMatchObject({
      commandTimeout: 2000,
      connectTimeout: 2000,
      maxRetriesPerRequest: 1,
      protocol: 2,
      tls: { ca: pem },
      username: "app",
      password: "s3cret",
    });
    for (let attempt = 1; attempt < 1000; attempt += 97) {
      expect(o.clusterRetryStrategy?.(attempt)).toBeGreaterThan(0);
    }
    // TLS to a managed cluster keeps the host name (certificate verification); plain redis:// resolves as usual.
    const resolved: string[] = [];
    o.dnsLookup!("cfg.example", (_err, address) => resolved.push(address));
    expect(resolved).toEqual(["cfg.example"]);
    const plain = clusterOptions({ url: "redis://127.0.0.1:7000", log });
    expect(plain.dnsLookup).toBeUndefined();
    expect(plain.redisOptions?.tls).toBeUndefined();
  });

  it("a plain client on one node gets MOVED for another node's key; the cluster client follows it", async () => {
    const seed = cluster.ports[0];
    let key: string;
    do key = `probe:${id()}`;
    while ((await ownerOf(key)) === seed);
    await expect(nodes.get(seed)!.set(key, "x")).rejects.toThrow(/^MOVED/);
    const client = await clusterClient();
    expect(client).toBeInstanceOf(Cluster);
    await client.set(key, "x");
    expect(await client.get(key)).toBe("x");
    expect(await nodes.get(await ownerOf(key))!.get(key)).toBe("x");
  });

  it("gets ready promptly from any seed node (no ready-check restart loop)", async () => {
    for (const url of cluster.urls) {
      const started = Date.now();
      const client = await clusterClient(url);
      expect(client.status).toBe("ready");
      expect(Date.now() - started).toBeLessThan(5_000);
      // Right away, commands reach keys on every node (nodes still connecting are retried, not failed).
      const keys = Array.from({ length: 40 }, () => `ready:${id()}`);
      await Promise.all(keys.map((k) => client.set(k, "1", "PX", 60_000)));
      expect(await Promise.all(keys.map((k) => client.get(k)))).toEqual(keys.map(() => "1"));
      expect(new Set(await Promise.all(keys.map(ownerOf))).size).toBe(cluster.ports.length);
    }
  });

  it("logs node addresses only, never the password, while no seed answers", async () => {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const port = await freePort();
    const client = createRedisClient({
      url: `redis://:s3cret-Pa55@127.0.0.1:${port}`,
      cluster: true,
      log: pino({ level: "debug" }, stream),
      maxReconnectDelayMs: 50,
    });
    // No offline queue: a command while the cluster is not ready fails at once.
    await expect(client.get("k")).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 500));
    await closeRedis(client);
    // Closed for good: no further attempts to reach the seeds.
    let attempts = 0;
    client.on("reconnecting", () => attempts++);
    await new Promise((r) => setTimeout(r, 300));
    expect(attempts).toBe(0);
    expect(client.status).not.toBe("ready");
    const text = lines.join("");
    expect(text).toContain("redis error");
    expect(text).toContain(`127.0.0.1:${port}`);
    expect(text).not.toContain("s3cret");
    // One line per distinct failure, not one per reconnect attempt (several attempts happened in 500 ms).
    expect(text.split("redis error").length - 1).toBeLessThanOrEqual(3);
  });
});

describe("rate limiter on the cluster", () => {
  it("a budget of 5/min gets 8 concurrent admissions per key, keys on every node: exactly 5 admitted each", async () => {
    const client = await clusterClient();
    const pfx = prefix();
    const limiter = new RedisRateLimiter({ client, prefix: pfx });
    const keyIds = await keysOnEveryNode(pfx, 2);
    const keyBudget = budget({ requestsPerMinute: 5 });
    // All in one tick: ioredis auto-pipelines them, one pipeline per node.
    const results = await Promise.all(
      keyIds.flatMap((keyId) =>
        Array.from({ length: 8 }, async () => ({ keyId, a: await limiter.admit(req({ keyId, keyBudget })) })),
      ),
    );
    for (const keyId of keyIds) {
      const mine = results.filter((r) => r.keyId === keyId).map((r) => r.a);
      expect(mine.filter((a) => a.allowed)).toHaveLength(5);
      const denied = mine.filter((a) => !a.allowed).map(rejected);
      expect(denied).toHaveLength(3);
      for (const d of denied) {
        expect([d.scope, d.budget]).toEqual(["key", "requests_per_minute"]);
        expect(d.retryAfterSeconds).toBeGreaterThanOrEqual(1);
        expect(d.retryAfterSeconds).toBeLessThanOrEqual(61);
      }
      // The count lives on the node that owns the key's slot.
      const hash = `{${pfx}:k:${keyId}}`;
      expect(await nodes.get(await ownerOf(hash))!.hget(hash, "R")).toBe("5");
    }
  });

  it("two limiter instances (two clients, as two replicas) share one budget", async () => {
    const pfx = prefix();
    const a = new RedisRateLimiter({ client: await clusterClient(cluster.urls[0]), prefix: pfx });
    const b = new RedisRateLimiter({ client: await clusterClient(cluster.urls[2]), prefix: pfx });
    const keyIds = await keysOnEveryNode(pfx, 1);
    const keyBudget = budget({ requestsPerMinute: 10 });
    for (const keyId of keyIds) {
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).admit(req({ keyId, keyBudget }))),
      );
      expect(results.filter((r) => r.allowed)).toHaveLength(10);
      expect(results.filter((r) => !r.allowed)).toHaveLength(20);
    }
  });

  it("key and team budgets share one slot per admission and commit all or nothing, teams on every node", async () => {
    const client = await clusterClient();
    const pfx = prefix();
    const limiter = new RedisRateLimiter({ client, prefix: pfx });
    const teamOwners = new Set<number>();
    const team = budget({ tokensPerMinute: 1000 });
    while (teamOwners.size < cluster.ports.length) {
      const teamId = id();
      const teamOwner = await ownerOf(`{${pfx}:t:${teamId}}`);
      if (teamOwners.has(teamOwner)) continue;
      teamOwners.add(teamOwner);
      const keyA = id();
      const keyB = id();
      const keyBBudget = budget({ requestsPerMinute: 1, tokensPerMinute: 500 });
      const reqB = (tokens: number) =>
        req({ keyId: keyB, teamId, keyBudget: keyBBudget, teamBudget: team, tokens });
      // Both hashes of one admission hash to the same slot (the team's tag): no CROSSSLOT.
      const [keyHash, teamHash] = scopeKeys(pfx, reqB(1), limitedScopes(reqB(1)));
      expect(await keySlot(keyHash)).toBe(await keySlot(teamHash));

      expect((await limiter.admit(req({ keyId: keyA, teamId, teamBudget: team, tokens: 600 }))).allowed).toBe(
        true,
      );
      const r = rejected(await limiter.admit(reqB(450)));
      expect([r.scope, r.budget]).toEqual(["team", "tokens_per_minute"]);
      // The rejected request consumed nothing: B's single request and its tokens are still there.
      expect((await limiter.admit(reqB(400))).allowed).toBe(true);
      const node = nodes.get(teamOwner)!;
      expect(await node.hmget(teamHash, "R", "T")).toEqual(["2", "1000"]);
      expect(await node.hmget(keyHash, "R", "T")).toEqual(["1", "400"]);
    }
  });

  it("settling a reservation refunds both scopes on their node", async () => {
    const client = await clusterClient();
    const pfx = prefix();
    const limiter = new RedisRateLimiter({ client, prefix: pfx });
    const teamId = id();
    const keyId = id();
    const r = req({
      keyId,
      teamId,
      keyBudget: budget({ tokensPerMinute: 1000 }),
      teamBudget: budget({ tokensPerMinute: 5000 }),
      tokens: 800,
    });
    const a = await limiter.admit(r);
    if (!a.allowed) throw new Error("expected an admission");
    await a.reservation.reconcile(300);
    const [keyHash, teamHash] = scopeKeys(pfx, r, limitedScopes(r));
    const node = nodes.get(await ownerOf(teamHash))!;
    expect(await node.hget(keyHash, "T")).toBe("300");
    expect(await node.hget(teamHash, "T")).toBe("300");
  });

  it("the script is loaded on whichever node owns the slot, and again after SCRIPT FLUSH (NOSCRIPT → EVAL)", async () => {
    const client = await clusterClient();
    const pfx = prefix();
    const limiter = new RedisRateLimiter({ client, prefix: pfx });
    const keyIds = await keysOnEveryNode(pfx, 1);
    const keyBudget = budget({ requestsPerMinute: 2 });
    for (const keyId of keyIds) expect((await limiter.admit(req({ keyId, keyBudget }))).allowed).toBe(true);
    for (const node of nodes.values()) expect(await node.script("EXISTS", LIMITER_SHA)).toEqual([1]);
    // As after a failover to a node that never saw the script.
    await Promise.all([...nodes.values()].map((n) => n.script("FLUSH")));
    const again = await Promise.all(keyIds.map((keyId) => limiter.admit(req({ keyId, keyBudget }))));
    expect(again.map((a) => a.allowed)).toEqual(keyIds.map(() => true));
    const third = await Promise.all(keyIds.map((keyId) => limiter.admit(req({ keyId, keyBudget }))));
    expect(third.map((a) => a.allowed)).toEqual(keyIds.map(() => false));
    for (const node of nodes.values()) expect(await node.script("EXISTS", LIMITER_SHA)).toEqual([1]);
  });
});

describe("response cache on the cluster", () => {
  it("stores and reads back entries whose keys live on every node", async () => {
    const client = await clusterClient();
    const pfx = `${prefix()}:c:`;
    const cache = new RedisResponseCache({ client, log, prefix: pfx, timeoutMs: 2_000 });
    const entry = (i: number): CachedResponse => ({
      kind: "json",
      body: {
        id: `chatcmpl-${i}`,
        object: "chat.completion",
        created: 1,
        model: "gpt-4o-mini",
        choices: [
          { index: 0, message: { role: "assistant", content: "x".repeat(i * 40) }, finish_reason: "stop" },
        ],
      },
    });
    const keys = Array.from({ length: 40 }, () => crypto.createHash("sha256").update(id()).digest("hex"));
    const errorsBefore = (await cacheErrors.get()).values.reduce((s, v) => s + v.value, 0);
    await Promise.all(keys.map((k, i) => cache.set(k, entry(i), 60)));
    const owning = new Set(await Promise.all(keys.map((k) => ownerOf(pfx + k))));
    expect(owning.size).toBe(cluster.ports.length);
    const read = await Promise.all(keys.map((k) => cache.get(k)));
    expect(read).toEqual(keys.map((_, i) => ({ ...entry(i), bodyText: JSON.stringify(entry(i).body) })));
    expect(await cache.get("absent")).toBeNull();
    const ttl = await client.pttl(pfx + keys[0]);
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    const errorsAfter = (await cacheErrors.get()).values.reduce((s, v) => s + v.value, 0);
    expect(errorsAfter).toBe(errorsBefore);
  });
});

describe("the proxy with REDIS_CLUSTER=true", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "gpt-4o-mini", provider: "fake" }]),
      env: { REDIS_URL: cluster.urls[0], REDIS_CLUSTER: "true", CACHE_ENABLED: "true" },
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function metric(name: string): Promise<number | null> {
    const text = await (await fetch(`${proxy.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(name));
    return line ? Number(line.split(" ").at(-1)) : null;
  }

  const chat = (key: string, content: string) =>
    fetch(`${proxy.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content }] }),
    });

  it("limits through the cluster: 3 admitted, the 4th gets 429, no fallback to per-process limiting", async () => {
    expect(proxy.config.redis.cluster).toBe(true);
    // A key whose counters live on another node than the seed: a plain client would get MOVED and fall back.
    let created = await proxy.createKey();
    while ((await ownerOf(`{llmproxy:k:${created.id}}`)) === cluster.ports[0])
      created = await proxy.createKey();
    await proxy.deps.keys.update(created.id, { limits: budget({ requestsPerMinute: 3 }) });

    const statuses: number[] = [];
    let last: Response | null = null;
    for (let i = 0; i < 4; i++) {
      last = await chat(created.key, `hello ${i} ${id()}`);
      statuses.push(last.status);
      if (i < 3) await last.arrayBuffer();
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
    expect(Number(last!.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(((await last!.json()) as { error: { code: string } }).error.code).toBe("rate_limit_exceeded");

    const hash = `{llmproxy:k:${created.id}}`;
    expect(await nodes.get(await ownerOf(hash))!.hget(hash, "R")).toBe("3");
    expect(await metric('llmproxy_ratelimit_fallback_active{mode="fail-open"}')).toBe(0);
    expect(await metric("llmproxy_ratelimit_fallback_transitions_total")).toBeNull();
    expect((await metric('llmproxy_ratelimit_redis_errors_total{operation="admit"}')) ?? 0).toBe(0);
  });

  it("the response cache works through the cluster (miss, then hit)", async () => {
    const { key } = await proxy.createKey();
    const content = `cache me ${id()}`;
    const miss = await chat(key, content);
    expect(miss.headers.get("x-cache")).toBe("miss");
    const body = await miss.json();
    let hit = await chat(key, content);
    const deadline = Date.now() + 5_000;
    while (hit.headers.get("x-cache") !== "hit" && Date.now() < deadline) {
      await hit.arrayBuffer();
      await new Promise((r) => setTimeout(r, 20));
      hit = await chat(key, content);
    }
    expect(hit.headers.get("x-cache")).toBe("hit");
    expect(await hit.json()).toEqual(body);
    expect((await metric('llmproxy_cache_errors_total{operation="get"}')) ?? 0).toBe(0);
  });
});
