/**
 * /v1/embeddings input as the checks see it: token ids cannot be read by the PII scrub or the content policy, the
 * input rules OpenAI documents, `max_input_tokens` per input, an answer without usage, a provider's `param`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encode } from "gpt-tokenizer/encoding/cl100k_base";
import type { FakeUpstream } from "../../helpers/fake-upstream";
import { startUpstreamProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

async function embed(proxy: TestProxy, key: string, body: Record<string, unknown>) {
  const res = await fetch(`${proxy.url}/v1/embeddings`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const models = [
  {
    name: "emb",
    provider: "fake",
    kind: "embedding" as const,
    pricing: { input_per_mtok: 1_000_000, output_per_mtok: 0 },
  },
  { name: "emb-small", provider: "fake", kind: "embedding" as const, max_input_tokens: 50 },
  { name: "emb-openai", provider: "fake", model: "text-embedding-3-small", kind: "embedding" as const },
];

describe("embeddings with PII and a content policy on", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let key: string;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ upstream, proxy, key, close } = await startUpstreamProxy(
      (baseUrl) =>
        upstreamConfig(
          { fake: baseUrl },
          models,
          "content_policy:\n  blocked_patterns: ['Project Falcon']\n",
        ),
      {},
    ));
  });
  afterAll(async () => {
    await close?.();
  });

  it("token ids of a model whose tokenizer is not known exactly are a 400 naming input; nothing is sent", async () => {
    const secret = "Project Falcon: contact john.smith@example.com";
    const asText = await embed(proxy, key, { model: "emb", input: secret });
    expect(asText.status).toBe(400);
    expect(asText.body.error.code).toBe("content_policy_violation");
    const before = upstream.requests.length;
    for (const input of [encode(secret), [encode(secret)], [encode("contact john.smith@example.com")]]) {
      const res = await embed(proxy, key, { model: "emb", input });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({
        type: "invalid_request_error",
        code: "unsupported_parameter",
        param: "input",
        message: expect.stringContaining("Send the text instead"),
      });
    }
    // Not in the vocabulary: not decodable either.
    const bogus = await embed(proxy, key, { model: "emb-openai", input: [[1, 2, 99_999_999]] });
    expect(bogus.status).toBe(400);
    expect(upstream.requests.length).toBe(before);
  });

  it("token ids of OpenAI's embedding models are decoded and checked like text (LangChain sends ids)", async () => {
    const blocked = await embed(proxy, key, {
      model: "emb-openai",
      input: [encode("Project Falcon: contact john.smith@example.com")],
    });
    expect(blocked.status).toBe(400);
    expect(blocked.body.error.code).toBe("content_policy_violation");
    const before = upstream.requests.length;
    const chunks = [encode("contact john.smith@example.com today"), encode("nothing personal here")];
    const res = await embed(proxy, key, { model: "emb-openai", input: chunks });
    expect(res.status).toBe(200);
    expect(res.body.data).toHaveLength(2);
    expect(upstream.requests.length).toBe(before + 1);
    const sent = upstream.requests.at(-1)!.body.input;
    expect(sent).toHaveLength(2);
    expect(sent[0]).toMatch(/^contact <<REDACTED_EMAIL_ADDRESS>> today$/);
    expect(sent[1]).toBe("nothing personal here");
    const one = await embed(proxy, key, { model: "emb-openai", input: encode("just one input") });
    expect(one.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.input).toBe("just one input");
  });

  it("max_input_tokens applies to each input, not to the batch", async () => {
    const short = "a short sentence about invoices and their due dates";
    const batch = await embed(proxy, key, { model: "emb-small", input: Array(20).fill(short) });
    expect(batch.status).toBe(200);
    const long = "word ".repeat(80);
    const over = await embed(proxy, key, { model: "emb-small", input: [short, long, short] });
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({ code: "context_length_exceeded", param: "input" });
    expect(over.body.error.message).toMatch(/^Input 1 has \d+ tokens, over the limit of 50 an input/);
    const single = await embed(proxy, key, { model: "emb-small", input: long });
    expect(single.status).toBe(400);
    expect(single.body.error.message).toMatch(/^Input has \d+ tokens/);
  });
});

describe("embeddings input rules and upstream errors (no PII, no policy)", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let key: string;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ upstream, proxy, key, close } = await startUpstreamProxy(
      (baseUrl) => upstreamConfig({ fake: baseUrl }, [models[0]], "pii: { enabled: false }\n"),
      {},
      { embeddingUsage: false },
    ));
  });
  afterAll(async () => {
    await close?.();
  });

  it("token ids pass when nothing needs to read them", async () => {
    const res = await embed(proxy, key, {
      model: "emb",
      input: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    expect(res.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.input).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
  });

  it("empty texts, negative token ids, unknown encoding formats and non-positive dimensions are a 400", async () => {
    const before = upstream.requests.length;
    for (const [body, param] of [
      [{ input: "" }, "input"],
      [{ input: ["a", ""] }, "input.1"],
      [{ input: [-1, 5] }, "input.0"],
      [{ input: "hi", encoding_format: "int8" }, "encoding_format"],
      [{ input: "hi", dimensions: 0 }, "dimensions"],
    ] as const) {
      const res = await embed(proxy, key, { model: "emb", ...body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error, JSON.stringify(body)).toMatchObject({ type: "invalid_request_error", param });
    }
    expect(upstream.requests.length).toBe(before);
  });

  it("an answer without usage is charged the input's estimate (row, cost), not zero", async () => {
    const text = "The quarterly report covers revenue, churn and the new pricing tiers. ".repeat(10);
    const res = await embed(proxy, key, { model: "emb", input: text });
    expect(res.status).toBe(200);
    expect(res.body.usage).toBeUndefined();
    const rows = await proxy.waitForUsageRows(1);
    const row = rows.filter((r) => r.route === "embeddings" && r.status === 200).at(-1);
    // Nothing counts tokens here (no limit needs them): the body at 4 bytes a token.
    const bodyBytes = JSON.stringify({ model: "emb", input: text }).length;
    expect(row.prompt_tokens).toBe(Math.ceil(bodyBytes / 4));
    expect(Number(row.cost_usd)).toBeGreaterThan(0);
  });

  it("a provider's 400 keeps its code and param", async () => {
    upstream.behave({
      kind: "status",
      status: 400,
      body: {
        error: {
          message: "This model's maximum context length is 8192 tokens.",
          type: "invalid_request_error",
          code: "context_length_exceeded",
          param: "input",
        },
      },
    });
    try {
      const res = await embed(proxy, key, { model: "emb", input: "hello" });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: "context_length_exceeded", param: "input" });
      // A param that is not a field name is not passed on.
      upstream.behave({
        kind: "status",
        status: 400,
        body: {
          error: { message: "bad", type: "invalid_request_error", param: "see https://x.example/?a=b c" },
        },
      });
      const odd = await embed(proxy, key, { model: "emb", input: "hello" });
      expect(odd.body.error.param).toBeNull();
    } finally {
      upstream.behave({ kind: "ok" });
    }
  });
});
