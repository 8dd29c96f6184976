/**
 * The key cache and a revocation racing a lookup: a lookup that read the key before it was revoked must not put that
 * state into the cache after the revocation, and requests after the revocation must not share that lookup. Real
 * PostgreSQL; the store's lookup is held at one point (after reading) to order the race.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type TestProxy } from "../../helpers/proxy";

describe("auth cache: a revocation that races a key lookup", () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy();
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const chat = (key: string) =>
    fetch(`${proxy.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "hi" }] }),
    });

  it("a lookup that read the key before its revocation does not make the revoked key work afterwards", async () => {
    const { id, key } = await proxy.createKey();
    const keys = proxy.deps.keys;
    const real = keys.findByHash.bind(keys);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let read!: () => void;
    const hasRead = new Promise<void>((r) => (read = r));
    keys.findByHash = async (hash) => {
      const found = await real(hash);
      read();
      await gate; // the revocation happens here, after the key was read as active
      return found;
    };
    try {
      const first = chat(key);
      await hasRead;
      const revoked = await fetch(`${proxy.url}/internal/keys/${id}/revoke`, {
        method: "POST",
        headers: { authorization: `Bearer ${proxy.masterKey}` },
      });
      expect(revoked.status).toBe(200);
      release();
      expect((await first).status).toBe(200); // it began before the revocation
    } finally {
      keys.findByHash = real;
    }
    const after = await chat(key);
    expect(after.status).toBe(401);
    expect(((await after.json()) as { error: { code: string } }).error.code).toBe("revoked_api_key");
  });
});
