/**
 * The Redis client factory: TLS from `rediss://` (+ CA), bounded commands, and logs that never carry the URL's
 * password — including while Redis is unreachable and ioredis keeps reconnecting.
 */
import { Writable } from "node:stream";
import pino from "pino";
import { describe, expect, it } from "vitest";
import {
  acquireRedis,
  closeRedis,
  createRedisClient,
  reconnectDelay,
  redisEndpoint,
  redisOptions,
} from "../../../service/adapters/redis";
import { freePort, startRedis } from "../../helpers/redis";

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

function captureLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: pino({ level: "debug" }, stream), text: () => lines.join("") };
}

describe("redis client", () => {
  it("rediss:// turns TLS on, with the given CA; redis:// does not", () => {
    const log = pino({ level: "silent" });
    expect(redisOptions({ url: "rediss://:pw@cache.example:6380", tlsCa: PEM, log }).tls).toEqual({
      ca: PEM,
    });
    expect(redisOptions({ url: "rediss://:pw@cache.example:6380", log }).tls).toEqual({});
    expect(redisOptions({ url: "redis://127.0.0.1:6379", log }).tls).toBeUndefined();
    const o = redisOptions({ url: "redis://127.0.0.1:6379", log });
    expect(o).toMatchObject({ enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000 });
  });

  it("reconnects with capped, jittered backoff and never gives up", () => {
    for (let attempt = 1; attempt < 100; attempt++) {
      const d = reconnectDelay(attempt, 2000);
      expect(d).toBeGreaterThan(0);
      expect(d).toBeLessThanOrEqual(2000);
    }
  });

  it("logs host and port only, never the password, even through a reconnect loop", async () => {
    const port = await freePort();
    const url = `redis://:s3cret-Pa55@127.0.0.1:${port}`;
    expect(redisEndpoint(url)).toBe(`redis://127.0.0.1:${port}`);
    const { log, text } = captureLogger();
    const client = createRedisClient({ url, log, maxReconnectDelayMs: 50 });
    await expect(client.ping()).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 300));
    await closeRedis(client);
    expect(text()).toContain("redis error");
    expect(text()).toContain(`127.0.0.1:${port}`);
    expect(text()).not.toContain("s3cret");
    // One line per distinct failure while down, not one per reconnect attempt.
    expect(text().split("redis error").length - 1).toBeLessThanOrEqual(2);
  });

  it("acquireRedis shares one connection per URL and closes it with the last holder", async () => {
    const server = await startRedis();
    try {
      const log = pino({ level: "silent" });
      const a = acquireRedis({ url: server.url, log });
      const b = acquireRedis({ url: server.url, log });
      expect(a.client).toBe(b.client);
      // No offline queue: a command before the connection is ready fails at once instead of waiting.
      if (a.client.status !== "ready") await expect(a.client.ping()).rejects.toThrow(/enableOfflineQueue/);
      await new Promise<void>((resolve) =>
        a.client.status === "ready" ? resolve() : a.client.once("ready", () => resolve()),
      );
      expect(await a.client.ping()).toBe("PONG");
      await a.release();
      expect(await b.client.ping()).toBe("PONG");
      await b.release();
      const deadline = Date.now() + 2_000;
      while (b.client.status !== "end" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(b.client.status).toBe("end");
      const c = acquireRedis({ url: server.url, log });
      expect(c.client).not.toBe(a.client);
      await c.release();
    } finally {
      await server.stop();
    }
  });
});
