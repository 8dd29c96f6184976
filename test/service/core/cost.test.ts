/**
 * Cost: every usage row carries the cost at the prices of the deployment that answered (after a fallback, the
 * fallback's), prompt-cache hits at the cached-input price; the usage report sums it per group and says how many
 * requests had no price; /metrics counts it per served model.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../service/config";
import { chatToMessage, createMessageStream } from "../../../service/lib/anthropic-messages";
import { costUsd } from "../../../service/lib/pricing";
import { fromAnthropicMessage } from "../../../service/providers/anthropic-translate";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { freePort } from "../../helpers/postgres";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

// 1,000 prompt tokens of which 400 came from the provider's prompt cache, 200 completion tokens.
const CACHED_USAGE = {
  prompt_tokens: 1000,
  completion_tokens: 200,
  total_tokens: 1200,
  prompt_tokens_details: { cached_tokens: 400 },
};
// input $2.50 / output $10 / cached input $1.25 per million tokens.
const PRICED_COST = (600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6;
// An OpenAI-compatible gateway in front of Claude reporting prompt-cache writes (OpenRouter's field): 2,000 prompt
// tokens, 300 read from the cache, 1,500 written to it, 100 completion tokens.
const WRITE_USAGE = {
  prompt_tokens: 2000,
  completion_tokens: 100,
  total_tokens: 2100,
  prompt_tokens_details: { cached_tokens: 300, cache_write_tokens: 1500 },
};
// input $3 / output $15 / cached $0.30 / cache writes at the default 1.25 × input = $3.75 per million tokens.
const WRITE_COST = (200 * 3 + 300 * 0.3 + 1500 * 3.75 + 100 * 15) / 1e6;
// The default fake answer (11 prompt, 7 completion) at $0.15 / $0.60.
const CHEAP_COST = (11 * 0.15 + 7 * 0.6) / 1e6;

describe("cost per request", () => {
  let big: FakeUpstream;
  let small: FakeUpstream;
  let writer: FakeUpstream;
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    big = await startFakeUpstream({ usage: CACHED_USAGE });
    small = await startFakeUpstream();
    writer = await startFakeUpstream({ usage: WRITE_USAGE });
    const down = `http://127.0.0.1:${await freePort()}/v1`;
    proxy = await startProxy({
      configYaml: upstreamConfig({ big: big.baseUrl, small: small.baseUrl, writer: writer.baseUrl, down }, [
        {
          name: "claude",
          provider: "writer",
          pricing: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3 },
        },
        {
          name: "priced",
          provider: "big",
          pricing: { input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25 },
        },
        { name: "unpriced", provider: "big" },
        {
          name: "cut",
          provider: "big",
          pricing: { input_per_mtok: 2.5, output_per_mtok: 10 },
        },
        { name: "cheap", provider: "small", pricing: { input_per_mtok: 0.15, output_per_mtok: 0.6 } },
        {
          name: "primary",
          provider: "down",
          fallbacks: ["cheap"],
          pricing: { input_per_mtok: 100, output_per_mtok: 100 },
        },
      ]),
    });
    key = (await proxy.createKey()).key;
  });

  afterAll(async () => {
    await proxy.close();
    await big.close();
    await small.close();
    await writer.close();
  });

  async function chat(body: object): Promise<Response> {
    return fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], ...body }),
    });
  }

  async function lastRow(): Promise<any> {
    const rows = await proxy.usageRows();
    return rows[rows.length - 1];
  }

  it("prices a JSON answer at the deployment's prices, prompt-cache hits at the cached price", async () => {
    const res = await chat({ model: "priced" });
    expect(res.status).toBe(200);
    await res.text();
    const row = await lastRow();
    expect(row.cached_tokens).toBe(400);
    expect(Number(row.cost_usd)).toBeCloseTo(PRICED_COST, 10);
  });

  it("prices a stream the same way once its usage chunk has passed", async () => {
    const res = await chat({ model: "priced", stream: true });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("[DONE]");
    const rows = await proxy.waitForUsageRows(2);
    const row = rows[rows.length - 1];
    expect(row.stream).toBe(true);
    expect(row.cached_tokens).toBe(400);
    expect(Number(row.cost_usd)).toBeCloseTo(PRICED_COST, 10);
  });

  it("records prompt-cache writes and prices them at the cache-write price, JSON and stream alike", async () => {
    await (await chat({ model: "claude" })).text();
    await (await chat({ model: "claude", stream: true })).text();
    const rows = (await proxy.waitForUsageRows(4)).filter((r) => r.requested_model === "claude");
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row).toMatchObject({ prompt_tokens: 2000, cached_tokens: 300, cache_write_tokens: 1500 });
      expect(Number(row.cost_usd)).toBeCloseTo(WRITE_COST, 10);
    }
  });

  it("records an unknown cost (null, not 0) when the deployment has no price", async () => {
    await (await chat({ model: "unpriced" })).text();
    const row = await lastRow();
    expect(row.prompt_tokens).toBe(1000);
    expect(row.cost_usd).toBeNull();
  });

  it("bills a fallback at the prices of the deployment that answered", async () => {
    const res = await chat({ model: "primary" });
    expect(res.status).toBe(200);
    await res.text();
    const row = await lastRow();
    expect(row.requested_model).toBe("primary");
    expect(row.served_model).toBe("cheap");
    expect(Number(row.cost_usd)).toBeCloseTo(CHEAP_COST, 12);
  });

  it("a stream cut before its usage chunk (and before any content) is priced at the prompt's estimate, not 0", async () => {
    big.behave({ kind: "stream-cut", okChunks: 1 });
    try {
      const res = await chat({ model: "cut", stream: true });
      expect(res.status).toBe(200);
      await res.text();
    } finally {
      big.behave({ kind: "ok" });
    }
    const rows = await proxy.waitForUsageRows(5);
    const row = rows.find((r) => r.requested_model === "cut");
    // The provider had the prompt and bills it: the row carries its estimate, priced.
    expect(row).toMatchObject({ served_model: "cut", completion_tokens: 0 });
    expect(row.prompt_tokens).toBeGreaterThan(0);
    expect(row.error_code).not.toBeNull();
    expect(Number(row.cost_usd)).toBeCloseTo((row.prompt_tokens * 2.5) / 1e6, 12);
  });

  it("a request rejected before any provider call costs 0", async () => {
    const res = await chat({ model: "priced", temperature: "hot" });
    expect(res.status).toBe(400);
    await res.text();
    const row = await lastRow();
    expect(row.status).toBe(400);
    expect(Number(row.cost_usd)).toBe(0);
  });

  it("the usage report sums cost and cached tokens per model and counts unpriced requests", async () => {
    const res = await fetch(`${proxy.url}/internal/usage?group_by=model`, {
      headers: { authorization: `Bearer ${proxy.masterKey}` },
    });
    expect(res.status).toBe(200);
    const { data } = (await res.json()) as { data: any[] };
    const by = Object.fromEntries(data.map((r) => [r.group, r]));
    expect(by.priced.requests).toBe(3); // two answers and the rejected request
    expect(by.priced.cost_usd).toBeCloseTo(2 * PRICED_COST, 6);
    expect(by.priced.cached_tokens).toBe(800);
    expect(by.priced.unpriced_requests).toBe(0);
    expect(by.unpriced.cost_usd).toBeNull();
    expect(by.unpriced.unpriced_requests).toBe(1);
    expect(by.cheap.cost_usd).toBeCloseTo(CHEAP_COST, 6);
    expect(by.cut.cost_usd).toBeGreaterThan(0);
    expect(by.cut.unpriced_requests).toBe(0);
    expect(by.claude).toMatchObject({ cached_tokens: 600, cache_write_tokens: 3000 });
    expect(by.claude.cost_usd).toBeCloseTo(2 * WRITE_COST, 6);
    expect(by.priced.cache_write_tokens).toBe(0);
  });

  it("exports the cost per served model in /metrics", async () => {
    const text = await (await fetch(`${proxy.url}/metrics`)).text();
    const value = (model: string) =>
      Number(new RegExp(`^llmproxy_cost_usd_total\\{model="${model}"\\} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value("priced")).toBeCloseTo(2 * PRICED_COST, 10);
    expect(value("cheap")).toBeCloseTo(CHEAP_COST, 12);
    expect(text).not.toMatch(/llmproxy_cost_usd_total\{model="unpriced"\}/);
  });
});

/** A chat completion of 2,000 prompt tokens (these details) and 100 completion tokens, for the /v1/messages side. */
function completionWith(details: Record<string, number>) {
  return {
    id: "c",
    object: "chat.completion",
    created: 0,
    model: "m",
    choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
    usage: {
      prompt_tokens: 2000,
      completion_tokens: 100,
      total_tokens: 2100,
      prompt_tokens_details: details,
    },
  };
}

/** An Anthropic message answering "hi" with this usage. */
function anthropicMessage(id: string, usage: Record<string, unknown>) {
  return fromAnthropicMessage({
    id,
    type: "message",
    role: "assistant",
    model: "claude",
    content: [{ type: "text", text: "hi" }],
    stop_reason: "end_turn",
    usage,
  } as never);
}

describe("pricing rules", () => {
  const pricing = {
    input: 2e-6,
    output: 8e-6,
    cachedInput: 5e-7,
    cacheWriteInput: 2.5e-6,
    cacheWrite1hInput: 4e-6,
  };

  it("cached tokens never exceed the prompt and never price below zero", () => {
    const base = { promptTokens: 100, completionTokens: 10, cacheHit: false, cacheWriteTokens: 0 };
    const served = { pricing };
    expect(costUsd({ ...base, cachedTokens: 0 }, served)).toBeCloseTo(100 * 2e-6 + 10 * 8e-6, 15);
    expect(costUsd({ ...base, cachedTokens: 500 }, served)).toBeCloseTo(100 * 5e-7 + 10 * 8e-6, 15);
    expect(costUsd({ ...base, cachedTokens: -5 }, served)).toBeCloseTo(100 * 2e-6 + 10 * 8e-6, 15);
  });

  it("no answer or a cache hit costs nothing; no price, or an answer whose usage never came, is unknown", () => {
    const none = {
      promptTokens: 0,
      completionTokens: 0,
      cachedTokens: 0,
      cacheWriteTokens: 0,
      cacheHit: false,
    };
    expect(costUsd({ ...none, cacheHit: true }, undefined)).toBe(0);
    expect(costUsd(none, undefined)).toBe(0);
    expect(costUsd({ ...none, promptTokens: 5, completionTokens: 1 }, { pricing: null })).toBeNull();
    expect(costUsd(none, { pricing })).toBeNull();
  });

  it("prices prompt-cache writes at the cache-write price, within what the prompt has left after reads", () => {
    const base = { promptTokens: 100, completionTokens: 10, cacheHit: false };
    const served = { pricing };
    expect(costUsd({ ...base, cachedTokens: 30, cacheWriteTokens: 50 }, served)).toBeCloseTo(
      20 * 2e-6 + 30 * 5e-7 + 50 * 2.5e-6 + 10 * 8e-6,
      15,
    );
    // Reads and writes together never exceed the prompt; reads win.
    expect(costUsd({ ...base, cachedTokens: 80, cacheWriteTokens: 50 }, served)).toBeCloseTo(
      80 * 5e-7 + 20 * 2.5e-6 + 10 * 8e-6,
      15,
    );
    // 1-hour writes, a part of the writes, at their own price; never more than the writes.
    expect(
      costUsd({ ...base, cachedTokens: 30, cacheWriteTokens: 50, cacheWrite1hTokens: 20 }, served),
    ).toBeCloseTo(20 * 2e-6 + 30 * 5e-7 + 30 * 2.5e-6 + 20 * 4e-6 + 10 * 8e-6, 15);
    expect(
      costUsd({ ...base, cachedTokens: 0, cacheWriteTokens: 10, cacheWrite1hTokens: 99 }, served),
    ).toBeCloseTo(90 * 2e-6 + 10 * 4e-6 + 10 * 8e-6, 15);
    expect(costUsd({ ...base, cachedTokens: 0, cacheWriteTokens: -3 }, served)).toBeCloseTo(
      100 * 2e-6 + 10 * 8e-6,
      15,
    );
  });

  it("defaults the cache-write price to 1.25 × input (Anthropic's 5-minute cache), and takes a configured one", () => {
    const env = { PROXY_MASTER_KEY: "k".repeat(40) };
    const fileText = (pricing: string) =>
      [
        "providers:",
        '  up: { type: openai, base_url: "http://127.0.0.1:9/v1" }',
        "models:",
        `  - { name: m, provider: up, pricing: ${pricing} }`,
      ].join("\n");
    const price = (p: string) => loadConfig({ env, fileText: fileText(p) }).models[0]!.pricing!;
    expect(price("{ input_per_mtok: 3, output_per_mtok: 15 }").cacheWriteInput).toBeCloseTo(3.75e-6, 15);
    expect(price("{ input_per_mtok: 3, output_per_mtok: 15 }").cacheWrite1hInput).toBeCloseTo(6e-6, 15);
    expect(
      price("{ input_per_mtok: 3, output_per_mtok: 15, cache_write_1h_input_per_mtok: 7 }").cacheWrite1hInput,
    ).toBeCloseTo(7e-6, 15);
    expect(
      price("{ input_per_mtok: 3, output_per_mtok: 15, cache_write_input_per_mtok: 6 }").cacheWriteInput,
    ).toBeCloseTo(6e-6, 15);
  });

  it("reads Anthropic's prompt-cache writes as cache-write prompt tokens", () => {
    const chat = anthropicMessage("msg_1", {
      input_tokens: 10,
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 1500,
      output_tokens: 3,
    });
    expect(chat.usage).toMatchObject({
      prompt_tokens: 1510,
      prompt_tokens_details: { cached_tokens: 0, cache_write_tokens: 1500 },
    });
    expect(chat.usage!.prompt_tokens_details).not.toHaveProperty("cache_write_1h_tokens");
    const hour = anthropicMessage("msg_2", {
      input_tokens: 10,
      cache_creation_input_tokens: 1500,
      cache_creation: { ephemeral_5m_input_tokens: 1000, ephemeral_1h_input_tokens: 500 },
      output_tokens: 3,
    });
    expect(hour.usage!.prompt_tokens_details).toEqual({
      cached_tokens: 0,
      cache_write_tokens: 1500,
      cache_write_1h_tokens: 500,
    });
  });

  it("gives /v1/messages clients reads and writes apart from input_tokens, as Anthropic reports them", () => {
    const completion = completionWith({ cached_tokens: 300, cache_write_tokens: 1500 });
    expect(chatToMessage(completion as never, "m").usage).toEqual({
      input_tokens: 200,
      output_tokens: 100,
      cache_read_input_tokens: 300,
      cache_creation_input_tokens: 1500,
    });
    const stream = createMessageStream("m");
    const events = [
      ...stream.push({
        ...completion,
        object: "chat.completion.chunk",
        choices: [{ index: 0, delta: { content: "ok" }, finish_reason: "stop" }],
        usage: undefined,
      } as never),
      ...stream.push({ ...completion, object: "chat.completion.chunk", choices: [] } as never),
      ...stream.end(),
    ].join("");
    const delta = /event: message_delta\ndata: (.*)\n/.exec(events)![1]!;
    expect(JSON.parse(delta).usage).toEqual({
      input_tokens: 200,
      output_tokens: 100,
      cache_read_input_tokens: 300,
      cache_creation_input_tokens: 1500,
    });
  });

  it("gives /v1/messages clients the 1-hour part of the writes as Anthropic does, when there is one", () => {
    const completion = completionWith({
      cached_tokens: 300,
      cache_write_tokens: 1500,
      cache_write_1h_tokens: 1000,
    });
    expect(chatToMessage(completion as never, "m").usage).toEqual({
      input_tokens: 200,
      output_tokens: 100,
      cache_read_input_tokens: 300,
      cache_creation_input_tokens: 1500,
      cache_creation: { ephemeral_5m_input_tokens: 500, ephemeral_1h_input_tokens: 1000 },
    });
  });

  it("reads Anthropic's prompt-cache reads as cached prompt tokens", () => {
    const chat = anthropicMessage("msg_1", {
      input_tokens: 10,
      cache_read_input_tokens: 90,
      cache_creation_input_tokens: 0,
      output_tokens: 3,
    });
    expect(chat.usage).toMatchObject({ prompt_tokens: 100, prompt_tokens_details: { cached_tokens: 90 } });
  });

  it("a bad price is a config error naming the key", () => {
    const fileText = [
      "providers:",
      '  up: { type: openai, base_url: "http://127.0.0.1:9/v1" }',
      "models:",
      "  - { name: m, provider: up, pricing: { input_per_mtok: -1 } }",
    ].join("\n");
    expect(() => loadConfig({ env: { PROXY_MASTER_KEY: "k".repeat(40) }, fileText })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { PROXY_MASTER_KEY: "k".repeat(40) }, fileText })).toThrow(
      /models\[0\]\.pricing\.input_per_mtok/,
    );
  });
});
