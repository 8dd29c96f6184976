import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type TestProxy } from "../../helpers/proxy";
import { MOCK_EMBEDDING_DIMENSIONS, mockEmbedding } from "../../../service/providers/mock";

/** What the openai SDK does with a base64 embedding: its bytes read as little-endian float32s. */
function fromBase64(s: string): number[] {
  const buf = Buffer.from(s, "base64");
  return Array.from({ length: buf.length / 4 }, (_, i) => buf.readFloatLE(i * 4));
}

const norm = (v: number[]) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));

describe("the built-in mock embeddings speak OpenAI's wire format (official openai SDK through the proxy)", () => {
  let proxy: TestProxy;
  let key: string;
  let client: OpenAI;

  beforeAll(async () => {
    // The built-in mock embedding deployment; PII off, so token-id input reaches the mock (with PII on, ids of a
    // model other than OpenAI's are a 400: embeddings-input.test.ts).
    proxy = await startProxy({
      configYaml:
        "providers:\n  mock: { type: mock }\nmodels:\n  - { name: mock-embedding, provider: mock, kind: embedding }\npii: { enabled: false }\n",
    });
    key = (await proxy.createKey({ scopes: ["embeddings"] })).key;
    client = new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const post = (body: unknown) =>
    fetch(`${proxy.url}/v1/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  it("the SDK's default (it asks for base64) decodes to the same 256 floats as encoding_format: float", async () => {
    const byDefault = await client.embeddings.create({ model: "mock-embedding", input: "hello world" });
    const asFloat = await client.embeddings.create({
      model: "mock-embedding",
      input: "hello world",
      encoding_format: "float",
    });
    expect(byDefault.data).toHaveLength(1);
    const v = byDefault.data[0].embedding;
    expect(v).toHaveLength(MOCK_EMBEDDING_DIMENSIONS);
    expect(v.filter((x) => x !== 0).length).toBeGreaterThan(0);
    expect(norm(v)).toBeCloseTo(1, 5);
    expect(asFloat.data[0].embedding).toEqual(v);
    expect(v).toEqual(mockEmbedding("hello world"));
    expect(byDefault.usage.prompt_tokens).toBeGreaterThan(0);
  });

  it("on the wire: base64 is the little-endian float32 bytes; float (also the default) is a number list", async () => {
    const b64 = (await (
      await post({ model: "mock-embedding", input: "hello world", encoding_format: "base64" })
    ).json()) as any;
    const flt = (await (
      await post({ model: "mock-embedding", input: "hello world", encoding_format: "float" })
    ).json()) as any;
    const plain = (await (await post({ model: "mock-embedding", input: "hello world" })).json()) as any;
    expect(typeof b64.data[0].embedding).toBe("string");
    expect(Buffer.from(b64.data[0].embedding, "base64")).toHaveLength(MOCK_EMBEDDING_DIMENSIONS * 4);
    expect(fromBase64(b64.data[0].embedding)).toEqual(flt.data[0].embedding);
    expect(Array.isArray(plain.data[0].embedding)).toBe(true);
    expect(plain.data[0].embedding).toEqual(flt.data[0].embedding);
  });

  it("a list of token ids is ONE input (both encodings)", async () => {
    const byDefault = await client.embeddings.create({ model: "mock-embedding", input: [1, 2, 3] });
    const asFloat = await client.embeddings.create({
      model: "mock-embedding",
      input: [1, 2, 3],
      encoding_format: "float",
    });
    expect(byDefault.data).toHaveLength(1);
    expect(byDefault.data[0].index).toBe(0);
    expect(byDefault.data[0].embedding).toHaveLength(MOCK_EMBEDDING_DIMENSIONS);
    expect(norm(byDefault.data[0].embedding)).toBeCloseTo(1, 5);
    expect(asFloat.data[0].embedding).toEqual(byDefault.data[0].embedding);
    expect(byDefault.usage.prompt_tokens).toBe(3);
  });

  it("a list of token-id lists gives one embedding per inner list, in order", async () => {
    const single = await client.embeddings.create({ model: "mock-embedding", input: [1, 2, 3] });
    const res = await client.embeddings.create({ model: "mock-embedding", input: [[1, 2, 3], [4, 5], [6]] });
    expect(res.data.map((d) => d.index)).toEqual([0, 1, 2]);
    for (const d of res.data) expect(d.embedding).toHaveLength(MOCK_EMBEDDING_DIMENSIONS);
    expect(res.data[0].embedding).toEqual(single.data[0].embedding);
    expect(res.data[1].embedding).not.toEqual(res.data[0].embedding);
    expect(res.usage.prompt_tokens).toBe(6);
  });

  it("a list of strings gives one embedding per string, deterministic", async () => {
    const input = ["the cat sat", "a dog barked", "the cat sat"];
    const first = await client.embeddings.create({ model: "mock-embedding", input });
    const again = await client.embeddings.create({
      model: "mock-embedding",
      input,
      encoding_format: "float",
    });
    expect(first.data).toHaveLength(3);
    expect(first.data.map((d) => d.embedding)).toEqual(input.map(mockEmbedding));
    expect(again.data.map((d) => d.embedding)).toEqual(first.data.map((d) => d.embedding));
    expect(first.data[0].embedding).toEqual(first.data[2].embedding);
    expect(first.data[0].embedding).not.toEqual(first.data[1].embedding);
  });

  it("an unknown encoding_format is a 400 naming the parameter", async () => {
    const res = await post({ model: "mock-embedding", input: "hi", encoding_format: "int8" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as any;
    expect(body.error).toMatchObject({
      type: "invalid_request_error",
      code: "invalid_value",
      param: "encoding_format",
    });
  });

  it("the proxy's own embedding calls (knowledge base) still get float lists", async () => {
    const vectors = await proxy.deps.providers.embed("mock-embedding", ["hello world", "other text"]);
    expect(vectors).toHaveLength(2);
    expect(vectors[0]).toEqual(mockEmbedding("hello world"));
    expect(vectors[1]).toEqual(mockEmbedding("other text"));
  });
});
