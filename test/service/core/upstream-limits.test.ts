/**
 * What the proxy buffers from an upstream is bounded: a whole JSON answer, an error status's body and one SSE
 * line or event each have a cap (lowered here so the tests move a few hundred KB, not the real 32 MiB); over it
 * the attempt is a bad answer (502 upstream_bad_response, retryable), or an error body is read only so far. A body
 * the proxy itself cannot serialize is its own error, never a provider failure.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHttpProvider,
  sseMessages,
  type HttpProvider,
  type ResponseBody,
} from "../../../service/providers/http";
import { ProviderFailure } from "../../../service/providers/errors";
import { MemoryResponseCache } from "../../../service/adapters/memory-cache";
import type { Config } from "../../../service/config";
import { createLogger } from "../../../service/logger";
import { createCache } from "../../../service/stages/cache";
import { startFakeAnthropic, type FakeAnthropic } from "../../helpers/fake-anthropic";
import { startProxy, type TestProxy } from "../../helpers/proxy";

/** How the upstream answers the next request. `end: false` keeps the body open (never finished). */
interface Answer {
  status: number;
  contentType: string;
  chunks: string[];
  end: boolean;
}

describe("an upstream's answer is read within caps", () => {
  let server: http.Server;
  let baseUrl: string;
  let answer: Answer;
  /** Resolved when the connection of the latest request closed (the proxy gave up reading it). */
  let closed: Promise<void>;
  let provider: HttpProvider;
  const signal = new AbortController().signal;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      req.resume();
      closed = new Promise((resolve) => res.on("close", () => resolve()));
      req.on("end", () => {
        res.writeHead(answer.status, { "content-type": answer.contentType });
        for (const chunk of answer.chunks) res.write(chunk);
        if (answer.end) res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    provider = createHttpProvider({
      name: "up",
      baseUrl,
      // Long enough that a read without a cap never ends within the test's own timeout.
      timeoutMs: 600_000,
      connections: 4,
      maxAnswerBytes: 16 * 1024,
      maxErrorBodyBytes: 1024,
    });
  });
  afterAll(async () => {
    await provider.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const failureOf = async (p: Promise<unknown>): Promise<ProviderFailure> => {
    const error = await p.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ProviderFailure);
    return error as ProviderFailure;
  };

  it("a 2xx JSON answer over the cap is a retryable bad answer (upstream_bad_response)", async () => {
    answer = {
      status: 200,
      contentType: "application/json",
      chunks: ['{"choices":[],"x":"', "a".repeat(256 * 1024), '"}'],
      end: true,
    };
    const failure = await failureOf(provider.postJson("/v1/chat/completions", [], {}, signal));
    expect(failure.retryable).toBe(true);
    expect(failure.clientError.status).toBe(502);
    expect(failure.clientError.code).toBe("upstream_bad_response");
    await closed; // the rest was not read: the connection was dropped

    // Under the cap, the same kind of answer is read as before.
    answer = { ...answer, chunks: ['{"choices":[],"x":"', "a".repeat(1024), '"}'] };
    const value = await provider.postJson<{ x: string }>("/v1/chat/completions", [], {}, signal);
    expect(value.x).toHaveLength(1024);
  });

  it("a 2xx answer nested deeper than a request body may be is a bad answer, not a stack overflow later", async () => {
    const deep = "[".repeat(5000) + "]".repeat(5000);
    answer = {
      status: 200,
      contentType: "application/json",
      chunks: [`{"choices":[],"x":${deep}}`],
      end: true,
    };
    const failure = await failureOf(provider.postJson("/v1/chat/completions", [], {}, signal));
    expect(failure.retryable).toBe(true);
    expect(failure.clientError.code).toBe("upstream_bad_response");
  });

  it("only the start of an error status's body is read (postJson and post)", async () => {
    // The upstream's message sits past the cap: the part read is not JSON, so its message is not passed on.
    const body = `{"pad":"${"p".repeat(64 * 1024)}","error":{"message":"marker-past-the-cap"}}`;
    answer = { status: 400, contentType: "application/json", chunks: [body], end: true };
    for (const call of [
      () => provider.postJson("/v1/chat/completions", [], {}, signal),
      () => provider.post("/v1/chat/completions", [], {}, signal),
    ]) {
      const failure = await failureOf(call());
      expect(failure.clientError.status).toBe(400);
      expect(failure.clientError.message).not.toContain("marker-past-the-cap");
      await closed;
    }
  });

  it("an SSE line or event over the cap is a bad event (upstream_bad_response), events under it pass", async () => {
    const read = async (chunks: string[]) => {
      answer = { status: 200, contentType: "text/event-stream", chunks, end: true };
      const res = await provider.post("/v1/chat/completions", [], {}, signal);
      const data: string[] = [];
      for await (const m of sseMessages(res.body as ResponseBody, "up", (m) => m.data === "[DONE]", 4096))
        data.push(m.data);
      return data;
    };
    const events = Array.from({ length: 50 }, (_, i) => `data: ${"e".repeat(1000)}${i}\n\n`);
    expect(await read([...events, "data: [DONE]\n\n"])).toHaveLength(51);

    for (const chunks of [
      // One line without end.
      ['data: {"x":"', "a".repeat(64 * 1024)],
      // One event of many short data lines without the blank line that ends it.
      Array.from({ length: 100 }, () => `data: ${"b".repeat(100)}\n`),
    ]) {
      const failure = await failureOf(read(chunks));
      expect(failure.message).toBe("up: bad event");
      expect(failure.retryable).toBe(true);
      expect(failure.clientError.code).toBe("upstream_bad_response");
    }
  });

  it("a request body the proxy cannot serialize is its own error, not a provider failure", async () => {
    answer = { status: 200, contentType: "application/json", chunks: ['{"choices":[]}'], end: true };
    const body = { n: 1n };
    for (const call of [
      () => provider.postJson("/v1/chat/completions", [], body, signal),
      () => provider.post("/v1/chat/completions", [], body, signal),
    ]) {
      const error = await call().then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(TypeError);
      expect(error).not.toBeInstanceOf(ProviderFailure);
    }
  });
});

describe("the cache never fails a request", () => {
  it("an answer that cannot be serialized is served and not stored", async () => {
    const cache = new MemoryResponseCache();
    const stage = createCache({
      config: { cache: { enabled: true, ttlSeconds: 60, scope: "global", maxEntries: 10 } } as Config,
      cache,
    });
    let deep: unknown[] = [];
    for (let i = 0; i < 50_000; i++) deep = [deep];
    const body = { id: "x", object: "chat.completion", choices: [], extra: deep };
    const ctx = {
      state: {
        chat: { model: "m", messages: [{ role: "user", content: "hi" }] },
        principal: { kind: "master" },
        log: createLogger("silent"),
      },
      get: () => "",
    };
    await stage(ctx as never, async () => {
      (ctx.state as Record<string, unknown>).result = { kind: "json", body };
    });
    expect((ctx.state as Record<string, unknown>).result).toMatchObject({ kind: "json", body });
    await new Promise((resolve) => setImmediate(resolve));
    expect(cache.size()).toBe(0);
  });
});

describe("tool-call arguments nested too deep for an Anthropic provider", () => {
  let a: FakeAnthropic;
  let b: FakeAnthropic;
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    a = await startFakeAnthropic();
    b = await startFakeAnthropic();
    proxy = await startProxy({
      env: { ANTHROPIC_API_KEY: "anthropic-test-credential-0123456789" },
      configYaml: [
        "providers:",
        `  ca: { type: anthropic, base_url: "${a.baseUrl}", api_key_env: ANTHROPIC_API_KEY, max_retries: 2 }`,
        `  cb: { type: anthropic, base_url: "${b.baseUrl}", api_key_env: ANTHROPIC_API_KEY, max_retries: 2 }`,
        "models:",
        "  - { name: claude, targets: [{ provider: ca, model: m }, { provider: cb, model: m }], cooldown_seconds: 300 }",
      ].join("\n"),
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await a?.close();
    await b?.close();
  });

  const send = (path: string, body: unknown) =>
    fetch(`${proxy.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const deepArgs = "[".repeat(100_000) + "]".repeat(100_000);

  it("are a 400 naming the field, never sent, and the pool stays usable", async () => {
    const res = await send("/v1/chat/completions", {
      model: "claude",
      messages: [
        { role: "user", content: "hi" },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: deepArgs } }],
        },
        { role: "tool", tool_call_id: "c1", content: "ok" },
      ],
    });
    expect(res.status).toBe(400);
    const error = ((await res.json()) as { error: Record<string, unknown> }).error;
    expect(error.param).toBe("messages[1].tool_calls[0].function.arguments");
    // A /v1/responses function_call reaches the same translation.
    const responses = await send("/v1/responses", {
      model: "claude",
      input: [
        { role: "user", content: "hi" },
        { type: "function_call", call_id: "c1", name: "f", arguments: deepArgs },
        { type: "function_call_output", call_id: "c1", output: "ok" },
      ],
    });
    expect(responses.status).toBe(400);
    expect(a.requests.length + b.requests.length).toBe(0);
    // No target was put into cooldown: both still serve.
    for (let i = 0; i < 6; i++) {
      const ok = await send("/v1/chat/completions", {
        model: "claude",
        messages: [{ role: "user", content: "hi" }],
      });
      expect(ok.status).toBe(200);
    }
    expect(a.requests.length).toBeGreaterThan(0);
    expect(b.requests.length).toBeGreaterThan(0);
  });
});

describe("a streamed event nested too deep", () => {
  it("is a bad event before the first byte (a 502 the client can retry), never a 500 or a crash", async () => {
    const deep = "[".repeat(50_000) + "]".repeat(50_000);
    const server = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end(
          `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],"extra":${deep}}\n\ndata: [DONE]\n\n`,
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    const proxy = await startProxy({
      configYaml: `providers:\n  deep: { type: openai, base_url: "${url}", max_retries: 0 }\nmodels:\n  - { name: m, provider: deep }\n`,
    });
    try {
      const { key } = await proxy.createKey();
      for (const stream of [true, false]) {
        const res = await fetch(`${proxy.url}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "m", stream, messages: [{ role: "user", content: "hi" }] }),
        });
        expect(res.status, `stream ${stream}`).toBe(502);
        expect(((await res.json()) as any).error.code).toBe("upstream_bad_response");
      }
      expect((await fetch(`${proxy.url}/healthz`)).status).toBe(200);
    } finally {
      await proxy.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
