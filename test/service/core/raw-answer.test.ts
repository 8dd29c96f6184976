/**
 * An answer the proxy does not change is sent as the upstream wrote it (not parsed and serialized again), and the
 * cache stores and replays that text; an answer it does change (PII restored) is sent changed.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

/** Odd but valid JSON: spacing, key order, escapes, a field the proxy does not know, a trailing newline. */
function chatText(content: string): string {
  return `{ "id":"chatcmpl-raw",  "object":"chat.completion","created":1700000000,"model":"up-model",
  "choices":[{"index":0,"message":{"role":"assistant","content":${JSON.stringify(content)}},"finish_reason":"stop","logprobs":null}],
  "usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18},"x_vendor":{"n":1.50,"s":"\\u00e9"} }
`;
}
const EMBED_TEXT = `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.10,-2.5e-3,1E2]}],"model":"e","usage":{"prompt_tokens":3,"total_tokens":3}}`;

describe("answers sent as the upstream wrote them", () => {
  let server: http.Server;
  let base: string;
  let proxy: TestProxy;
  let key: string;
  let calls = 0;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        calls++;
        const parsed = JSON.parse(body) as { messages?: Array<{ content: string }> };
        // The chat answer echoes the last message, so placeholders come back for the proxy to restore.
        const text = req.url!.endsWith("/embeddings")
          ? EMBED_TEXT
          : chatText(`You said: ${parsed.messages!.at(-1)!.content}`);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(text);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    proxy = await startProxy({
      configYaml: upstreamConfig({ up: base }, [
        { name: "chat", provider: "up", model: "up-model" },
        { name: "embed", provider: "up", kind: "embedding" } as never,
      ]),
      env: { CACHE_ENABLED: "true" },
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await new Promise((r) => server?.close(r));
  });

  const post = (path: string, body: unknown) =>
    fetch(`${proxy.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  it("chat: the exact bytes, on a miss and again on the cache hit; usage read from them", async () => {
    const body = { model: "chat", messages: [{ role: "user", content: "what is the answer?" }] };
    const before = calls;
    const first = await post("/v1/chat/completions", body);
    expect(first.status).toBe(200);
    expect(first.headers.get("x-cache")).toBe("miss");
    const expected = chatText("You said: what is the answer?");
    expect(await first.text()).toBe(expected);
    expect(Number(first.headers.get("content-length"))).toBe(Buffer.byteLength(expected));

    const second = await post("/v1/chat/completions", body);
    expect(second.headers.get("x-cache")).toBe("hit");
    expect(await second.text()).toBe(expected);
    expect(calls - before).toBe(1);

    const rows = await proxy.waitForUsageRows(2);
    const miss = rows.find((r) => !r.cache_hit && r.route === "chat");
    expect(miss).toMatchObject({ prompt_tokens: 11, completion_tokens: 7 });
  });

  it("another spelling of a route (case, trailing slash) is that route: its usage row and its wire format", async () => {
    const before = (await proxy.usageRows()).length;
    const chat = { model: "chat", messages: [{ role: "user", content: "spelled differently" }] };
    for (const path of ["/v1/chat/completions/", "/V1/Chat/Completions"]) {
      const res = await post(path, chat);
      expect(res.status, path).toBe(200);
      expect(((await res.json()) as { object: string }).object).toBe("chat.completion");
    }
    const messages = await post("/v1/messages/", {
      model: "chat",
      max_tokens: 20,
      messages: [{ role: "user", content: "hello there" }],
    });
    expect(messages.status).toBe(200);
    expect(((await messages.json()) as { type: string }).type).toBe("message");
    const rows = (await proxy.waitForUsageRows(before + 3)).slice(before);
    expect(rows.map((r) => r.route).sort()).toEqual(["chat", "chat", "messages"]);
  });

  it("embeddings: the exact bytes", async () => {
    const res = await post("/v1/embeddings", { model: "embed", input: "hello" });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(EMBED_TEXT);
  });

  it("an answer whose placeholders are restored is sent restored, on the miss and on the hit", async () => {
    const email = "ana.lima@example.com";
    const body = { model: "chat", messages: [{ role: "user", content: `write to ${email}` }] };
    for (const expectCache of ["miss", "hit"]) {
      const res = await post("/v1/chat/completions", body);
      expect(res.headers.get("x-cache")).toBe(expectCache);
      const text = await res.text();
      expect(text).not.toContain("<<PII_");
      const answer = JSON.parse(text) as {
        choices: Array<{ message: { content: string } }>;
        x_vendor: unknown;
      };
      expect(answer.choices[0]!.message.content).toBe(`You said: write to ${email}`);
      expect(answer.x_vendor).toEqual({ n: 1.5, s: "é" });
    }
  });
});
