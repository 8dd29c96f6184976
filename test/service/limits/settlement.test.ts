/**
 * Settling a reservation through the real app (real upstream stage, Redis limiter, PostgreSQL usage rows) against an
 * OpenAI-compatible server scripted per test: answers without usage, streams without a usage chunk, an answer the
 * client does not wait for. The token budget, the usage row and the spend must tell the same story.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import Redis from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Budget } from "../../../service/config";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";
import { SHARED_REDIS_URL } from "../../helpers/redis";
import { leaveStreamAfter } from "../../helpers/stream";

const NONE: Budget = { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null };
const ANSWER = "Hello there, twenty-eight chars"; // 31 characters: 8 tokens at 4 characters a token

type Script = "no-usage" | "hang" | "role-then-hang";

function chunk(delta: object, finish: string | null = null): string {
  const c = { id: "c", object: "chat.completion.chunk", created: 1, model: "m" };
  return `data: ${JSON.stringify({ ...c, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
}

/** An upstream that answers per `script`; counts the requests it received. */
async function startScripted(): Promise<{
  url: string;
  received: () => number;
  script(s: Script): void;
  close(): Promise<void>;
}> {
  let script: Script = "no-usage";
  let received = 0;
  const server = http.createServer((req, res) => {
    let text = "";
    req.on("data", (d: Buffer) => (text += d));
    req.on("end", () => {
      received++;
      const body = JSON.parse(text);
      if (script === "hang") return;
      if (script === "role-then-hang") {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(chunk({ role: "assistant", content: "" }));
        return;
      }
      if (!body.stream) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            id: "c",
            object: "chat.completion",
            created: 1,
            model: "m",
            choices: [{ index: 0, message: { role: "assistant", content: ANSWER }, finish_reason: "stop" }],
          }),
        );
        return;
      }
      // A server that ignores stream_options.include_usage: the answer, then [DONE], no usage chunk.
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(chunk({ role: "assistant", content: ANSWER.slice(0, 12) }));
      res.write(chunk({ content: ANSWER.slice(12) }, "stop"));
      res.end("data: [DONE]\n\n");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    received: () => received,
    script: (s) => (script = s),
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

let scripted: Awaited<ReturnType<typeof startScripted>>;
let proxy: TestProxy;
let redis: Redis;

beforeAll(async () => {
  scripted = await startScripted();
  proxy = await startProxy({
    configYaml: upstreamConfig(
      { s: scripted.url },
      [{ name: "m", provider: "s", pricing: { input_per_mtok: 1_000_000, output_per_mtok: 1_000_000 } }],
      "limits:\n  default_completion_tokens: 1000\n",
    ),
    env: { REDIS_URL: SHARED_REDIS_URL },
  });
  redis = new Redis(SHARED_REDIS_URL);
});
afterAll(async () => {
  await proxy?.close();
  await scripted?.close();
  await redis?.quit();
});

async function keyWith(limits: Partial<Budget>): Promise<{ id: string; key: string }> {
  const created = await proxy.createKey();
  await proxy.deps.keys.update(created.id, { limits: { ...NONE, ...limits } });
  return created;
}

function chat(key: string, body: Record<string, unknown>, signal?: AbortSignal): Promise<Response> {
  return fetch(`${proxy.baseURL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "m", ...body }),
    signal,
  });
}

/** Tokens in the key's minute window, as the Redis limiter holds them. */
async function windowTokens(keyId: string): Promise<number> {
  return Number((await redis.hget(`{llmproxy:k:${keyId}}`, "T")) ?? 0);
}

async function rowsOf(keyId: string, n: number): Promise<any[]> {
  for (let i = 0; i < 200; i++) {
    const rows = (await proxy.usageRows()).filter((r) => r.key_id === keyId);
    if (rows.length >= n) return rows;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`fewer than ${n} usage rows for ${keyId}`);
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!check()) throw new Error("timed out");
}

describe("reconciling without the provider's usage", () => {
  it("a stream that ends without a usage chunk is charged the estimate a JSON answer without usage is", async () => {
    scripted.script("no-usage");
    const { id, key } = await keyWith({ tokensPerMinute: 1_000_000 });
    const messages = [{ role: "user", content: "Say hello." }];
    const json = await chat(key, { messages });
    expect(json.status).toBe(200);
    await json.arrayBuffer();
    const afterJson = await windowTokens(id);
    // The prompt's estimate plus 8 for the answer: not the 1,000-token default allowance.
    expect(afterJson).toBeGreaterThan(8);
    expect(afterJson).toBeLessThan(100);

    const stream = await chat(key, { messages, stream: true });
    expect(await stream.text()).toContain("data: [DONE]");
    expect((await windowTokens(id)) - afterJson).toBe(afterJson);

    const rows = await rowsOf(id, 2);
    const [jsonRow, streamRow] = [rows.find((r) => !r.stream), rows.find((r) => r.stream)];
    expect(streamRow).toMatchObject({
      status: 200,
      prompt_tokens: jsonRow.prompt_tokens,
      completion_tokens: 8,
      cost_usd: jsonRow.cost_usd,
    });
    expect(jsonRow.prompt_tokens + 8).toBe(afterJson);
  });
});

describe("a client that leaves", () => {
  it("while the provider has its request (JSON, or a stream before its first event) keeps its reservation, and its row the prompt's estimate", async () => {
    for (const stream of [false, true]) {
      scripted.script("hang");
      const { id, key } = await keyWith({ tokensPerMinute: 5000 });
      const messages = [{ role: "user", content: "Write a long essay." }];
      const seen = scripted.received();
      const client = new AbortController();
      const pending = chat(key, { max_tokens: 4000, stream, messages }, client.signal).catch(() => null);
      await until(() => scripted.received() > seen);
      client.abort();
      expect(await pending).toBeNull();
      const [row] = await rowsOf(id, 1);
      await new Promise((r) => setTimeout(r, 200)); // the request's settling runs once the upstream call is cancelled

      // The provider generates (and bills) the ~4,010 tokens anyway: a second such request does not fit the 5,000.
      scripted.script("no-usage");
      const next = await chat(key, { max_tokens: 4000, messages });
      expect(next.status).toBe(429);
      expect(((await next.json()) as { error: { param: string } }).error.param).toBe("tokens_per_minute");
      expect(row).toMatchObject({ status: 499, error_code: "client_closed_request", completion_tokens: 0 });
      expect(row.prompt_tokens).toBeGreaterThan(0);
      expect(Number(row.cost_usd)).toBe(row.prompt_tokens);
    }
  });

  it("from a stream before any content: the row carries the prompt's estimate and its cost", async () => {
    scripted.script("role-then-hang");
    const { id, key } = await keyWith({ tokensPerMinute: 1_000_000 });
    await leaveStreamAfter(
      `${proxy.baseURL}/chat/completions`,
      {
        headers: { authorization: `Bearer ${key}` },
        body: { model: "m", stream: true, messages: [{ role: "user", content: "Tell me a story." }] },
      },
      '"role":"assistant"',
    );
    const [row] = await rowsOf(id, 1);
    expect(row).toMatchObject({ stream: true, status: 200, error_code: "client_closed_request" });
    expect(row.prompt_tokens).toBeGreaterThan(0);
    expect(row.completion_tokens).toBe(0);
    expect(Number(row.cost_usd)).toBe(row.prompt_tokens);
  });
});
