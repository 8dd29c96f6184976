/**
 * A misbehaving upstream: a 2xx answer that is not a chat completion, stream chunks of the wrong shape, and usage
 * numbers no request can have. Each is a clean 502 (or a final error event once a stream has started), tried on the
 * fallback like any bad answer, never cached as a success, and never a 500 from the proxy's own code; reported
 * usage is bounded before cost, spend and limits are computed from it.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../service/config";
import { retryAfterMsOf } from "../../../service/providers/errors";
import { MAX_REPORTED_TOKENS } from "../../../service/lib/chunk-blocks";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

/** An upstream that answers every request with whatever `answer` says: a JSON body, or SSE lines. */
interface RawUpstream {
  baseUrl: string;
  answer: { json: string } | { sse: string[] };
  requests: number;
  close(): Promise<void>;
}

async function startRawUpstream(): Promise<RawUpstream> {
  const raw: RawUpstream = {
    baseUrl: "",
    answer: { json: "null" },
    requests: 0,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      raw.requests++;
      const a = raw.answer;
      if ("json" in a) {
        const status = (a as { status?: number }).status ?? 200;
        res.writeHead(status, {
          "content-type": "application/json",
          ...(status < 400 && status >= 300 ? { location: "http://127.0.0.1:9/" } : {}),
        });
        res.end(a.json);
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const line of a.sse) res.write(`data: ${line}\n\n`);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  raw.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return raw;
}

const chunk = (rest: Record<string, unknown>) =>
  JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", ...rest });

describe("a misbehaving upstream", () => {
  let raw: RawUpstream;
  let good: FakeUpstream;
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    raw = await startRawUpstream();
    good = await startFakeUpstream({ usage: { prompt_tokens: 1e300, completion_tokens: 2 ** 60 } });
    proxy = await startProxy({
      configYaml: upstreamConfig(
        { raw: raw.baseUrl, good: good.baseUrl },
        [
          { name: "bad", provider: "raw" },
          { name: "bad-with-fallback", provider: "raw", fallbacks: ["huge"] },
          { name: "huge", provider: "good", pricing: { input_per_mtok: 1, output_per_mtok: 2 } },
        ],
        "cache: { enabled: true }\n",
      ),
    });
    key = (await proxy.createKey({ scopes: ["*"] })).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await raw?.close();
    await good?.close();
  });

  const chat = (model: string, extra: Record<string, unknown> = {}) =>
    fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model,
        messages: [{ role: "user", content: "mail john.smith@example.com" }],
        ...extra,
      }),
    });

  it("a 200 that is not a chat completion → 502 upstream_bad_response, not cached, the fallback serves", async () => {
    const bodies = [
      "null",
      "42",
      "[]",
      '"hi"',
      '{"error":{"message":"upstream internal boom"}}',
      '{"choices":null}',
      '{"id":"x"}',
      '{"choices":[null,5,{"message":null}]}',
      '{"choices":[{"message":5}]}',
      '{"choices":[{"message":{"role":"assistant","tool_calls":[null]}}]}',
      '{"choices":[],"usage":7}',
    ];
    for (const json of bodies) {
      raw.answer = { json };
      const before = raw.requests;
      for (let i = 0; i < 2; i++) {
        const res = await chat("bad");
        expect(res.status, json).toBe(502);
        expect(res.headers.get("x-cache"), json).not.toBe("hit");
        expect(((await res.json()) as any).error.code, json).toBe("upstream_bad_response");
      }
      // Asked both times: the bad answer was not stored.
      expect(raw.requests - before, json).toBe(2);
      const served = await chat("bad-with-fallback", { temperature: Math.random() });
      expect(served.status, json).toBe(200);
    }
  });

  it("a redirect from the upstream is a failed attempt (502, the fallback serves), not a success", async () => {
    const before = raw.requests;
    raw.answer = { json: '{"choices":[]}', status: 301 } as never;
    const res = await chat("bad");
    expect(res.status).toBe(502);
    expect(((await res.json()) as any).error.message).toMatch(/redirect/);
    expect((await chat("bad-with-fallback", { temperature: Math.random() })).status).toBe(200);
    expect(raw.requests - before).toBe(2);
  });

  it("bounds reported usage: the row is written with at most 2^31 - 1 tokens and a finite cost", async () => {
    const res = await chat("huge", { user: "bounded-usage" });
    expect(res.status).toBe(200);
    let row: any;
    for (let i = 0; i < 50 && !row; i++) {
      const { rows } = await proxy.pool.query(
        "SELECT prompt_tokens, completion_tokens, cost_usd::float8 AS cost FROM usage WHERE served_model = 'huge' ORDER BY created_at DESC LIMIT 1",
      );
      row = rows[0];
      if (!row) await new Promise((r) => setTimeout(r, 100));
    }
    expect(row).toBeDefined();
    expect(row.prompt_tokens).toBe(MAX_REPORTED_TOKENS);
    expect(row.completion_tokens).toBe(MAX_REPORTED_TOKENS);
    expect(row.cost).toBeCloseTo((MAX_REPORTED_TOKENS * 1 + MAX_REPORTED_TOKENS * 2) / 1e6, 3);
  });

  it("a usage chunk without choices passes; a chunk that is not a chunk ends the stream with an error event", async () => {
    const text = (res: Response) => res.text();
    raw.answer = {
      sse: [
        chunk({ choices: [{ index: 0, delta: { content: "hi" }, finish_reason: null }] }),
        chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }),
        JSON.stringify({ id: "c", usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }),
        "[DONE]",
      ],
    };
    const ok = await text(await chat("bad", { stream: true }));
    expect(ok).toContain('"content":"hi"');
    expect(ok).not.toContain('"error"');
    expect(ok.trimEnd().endsWith("data: [DONE]")).toBe(true);

    for (const bad of [
      "5",
      "null",
      chunk({ choices: null }),
      chunk({ choices: [null] }),
      chunk({ choices: [{ delta: 5 }] }),
    ]) {
      raw.answer = {
        sse: [
          chunk({ choices: [{ index: 0, delta: { content: "hi" }, finish_reason: null }] }),
          bad,
          "[DONE]",
        ],
      };
      for (const path of ["/v1/chat/completions", "/v1/messages", "/v1/responses"]) {
        const body =
          path === "/v1/chat/completions"
            ? { model: "bad", stream: true, messages: [{ role: "user", content: "hi" }] }
            : path === "/v1/messages"
              ? { model: "bad", stream: true, max_tokens: 10, messages: [{ role: "user", content: "hi" }] }
              : { model: "bad", stream: true, input: "hi" };
        const res = await fetch(`${proxy.url}${path}`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        const out = await res.text();
        expect(out, `${path} ${bad}`).not.toContain("internal_error");
        expect(out, `${path} ${bad}`).toMatch(/upstream_bad_response|malformed stream event/);
      }
    }
  });
});

describe("provider configuration", () => {
  const config = (provider: string) =>
    loadConfig({
      env: { PROXY_MASTER_KEY: "k".repeat(40), DATABASE_URL: "postgres://u@h/db", OPENAI_API_KEY: "sk-x" },
      fileText: `providers:\n  p: ${provider}\nmodels:\n  - { name: m, provider: p }\n`,
    });

  it("a base_url that is not http(s) is a config error naming the key", () => {
    for (const url of ["ftp://a/v1", "file:///etc/passwd", "javascript:alert(1)", "mailto:a@b"]) {
      let error: unknown;
      try {
        config(`{ type: openai, base_url: "${url}" }`);
      } catch (e) {
        error = e;
      }
      expect(error, url).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message, url).toMatch(/providers\.p\.base_url.*http:\/\/ or https:\/\//);
    }
    expect(() => config('{ type: openai, base_url: "https://api.example.com/v1" }')).not.toThrow();
  });

  it("provider headers must be HTTP header names and values without line breaks", () => {
    expect(() =>
      config('{ type: openai, base_url: "https://a/v1", headers: { "bad header": "x" } }'),
    ).toThrow(/headers/);
    expect(() =>
      config('{ type: openai, base_url: "https://a/v1", headers: { "x-ok": "a\\r\\nInjected: 1" } }'),
    ).toThrow(/line breaks/);
    expect(() =>
      config('{ type: openai, base_url: "https://a/v1", headers: { "x-team": "ml" } }'),
    ).not.toThrow();
  });

  it("a fallback or the embedding_model of the wrong kind is a config error", () => {
    const file = (extra: string) =>
      loadConfig({
        env: { PROXY_MASTER_KEY: "k".repeat(40), DATABASE_URL: "postgres://u@h/db" },
        fileText: `providers:\n  p: { type: openai, base_url: "https://a/v1" }\nmodels:\n  - { name: c, provider: p, fallbacks: [e] }\n  - { name: e, provider: p, kind: embedding }\n${extra}`,
      });
    expect(() => file("")).toThrow(/fallbacks\[0\].*embedding model/);
    expect(() =>
      loadConfig({
        env: { PROXY_MASTER_KEY: "k".repeat(40), DATABASE_URL: "postgres://u@h/db" },
        fileText: `providers:\n  p: { type: openai, base_url: "https://a/v1" }\nmodels:\n  - { name: c, provider: p }\nembedding_model: c\n`,
      }),
    ).toThrow(/embedding_model.*not an embedding model/);
  });

  it("a provider's Retry-After is read as seconds or an HTTP date, within 0 to 24 h, else ignored", () => {
    const now = Date.parse("2026-11-25T00:00:00Z");
    expect(retryAfterMsOf("2", now)).toBe(2000);
    expect(retryAfterMsOf("-5", now)).toBeNull();
    expect(retryAfterMsOf("1e3", now)).toBeNull();
    expect(retryAfterMsOf("99999999", now)).toBe(24 * 3600 * 1000);
    expect(retryAfterMsOf("Wed, 25 Nov 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(retryAfterMsOf("Tue, 24 Nov 2026 00:00:30 GMT", now)).toBe(0);
    expect(retryAfterMsOf("soon", now)).toBeNull();
  });

  it("api_key_env may not name the proxy's own secrets", () => {
    for (const name of ["PROXY_MASTER_KEY", "DATABASE_URL", "REDIS_URL"]) {
      expect(() => config(`{ type: openai, base_url: "https://a/v1", api_key_env: ${name} }`), name).toThrow(
        /api_key_env.*proxy's own settings/,
      );
    }
    expect(() =>
      config('{ type: openai, base_url: "https://a/v1", api_key_env: OPENAI_API_KEY }'),
    ).not.toThrow();
  });

  it("a DATABASE_URL or REDIS_URL that does not parse is a config error naming it, without the value", () => {
    const cases: Array<[string, string]> = [
      ["DATABASE_URL", "postgres://u:SECRETPASS@h:notaport/db"],
      ["REDIS_URL", "redis://:SECRETPASS@127.0.0.1:notaport"],
    ];
    for (const [name, value] of cases) {
      let error: unknown;
      try {
        loadConfig({
          env: { PROXY_MASTER_KEY: "k".repeat(40), DATABASE_URL: "postgres://u@h/db", [name]: value },
        });
      } catch (e) {
        error = e;
      }
      expect(error, name).toBeInstanceOf(Error);
      expect((error as Error).message).toContain(`env ${name}`);
      expect((error as Error).message).toContain("a numeric port");
      expect((error as Error).message).not.toContain("SECRETPASS");
    }
  });
});
