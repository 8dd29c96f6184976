/**
 * Key-cache invalidation across replicas, over Redis pub/sub (when REDIS_URL is set). Auth caches a key lookup for
 * 5 s; an admin change (revoke, rotate, key or team update) drops the cached copies on the replica that made it at
 * once, and this bus tells every other replica's workers to do the same — so a revoked key stops working everywhere
 * within a Redis round trip instead of the cache's 5 s. Best effort by design: while Redis is unreachable the 5 s
 * bound still holds, nothing waits for the bus, and nothing it does can fail a request.
 *
 * One subscriber connection per worker (a subscribed connection can run no other command); publishing goes through
 * the shared client (`acquireRedis`). Messages carry only a kind and an id — never a key or a hash.
 */
import type { Logger } from "pino";
import { acquireRedis, closeRedis, createRedisClient, type RedisClientOptions } from "./redis";

export const KEY_EVENTS_CHANNEL = "llmproxy:key-events";

export type KeyEvent = { kind: "key" | "team"; id: string };

export interface KeyEventBus {
  publish(event: KeyEvent): void;
  close(): Promise<void>;
}

function parse(message: string): KeyEvent | null {
  try {
    const e = JSON.parse(message) as Partial<KeyEvent>;
    if ((e.kind === "key" || e.kind === "team") && typeof e.id === "string" && e.id.length <= 64) {
      return { kind: e.kind, id: e.id };
    }
  } catch {
    // not ours
  }
  return null;
}

export function createKeyEventBus(
  opts: Omit<RedisClientOptions, "log"> & { log: Logger; onEvent(event: KeyEvent): void },
): KeyEventBus {
  const log = opts.log.child({ component: "key-events" });
  const lease = acquireRedis(opts);
  const subscriber = createRedisClient(opts);
  // Without an offline queue a command before `ready` fails; (re)subscribe each time the connection is ready.
  subscriber.on("ready", () => {
    subscriber.subscribe(KEY_EVENTS_CHANNEL).catch((error: Error) => {
      log.warn(
        { err: error.message },
        "key events: subscribe failed; revocations reach this worker within 5 s",
      );
    });
  });
  subscriber.on("message", (channel: string, message: string) => {
    if (channel !== KEY_EVENTS_CHANNEL) return;
    const event = parse(message);
    if (event) opts.onEvent(event);
  });
  return {
    publish(event) {
      lease.client.publish(KEY_EVENTS_CHANNEL, JSON.stringify(event)).catch((error: Error) => {
        log.warn({ err: error.message }, "key events: publish failed; other replicas catch up within 5 s");
      });
    },
    async close() {
      await Promise.allSettled([closeRedis(subscriber), lease.release()]);
    },
  };
}
