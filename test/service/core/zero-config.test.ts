/**
 * The zero-config path: OPENAI_API_KEY (and OPENAI_BASE_URL) set and no config file. Every model name goes to that
 * upstream unchanged, with that key; the built-in mock models stay on the mock.
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, type TestProxy } from "../../helpers/proxy";

const PROVIDER_KEY = "sk-zero-config-test-0123456789";

describe("zero-config: OPENAI_API_KEY and OPENAI_BASE_URL, no config file", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let client: OpenAI;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({ env: { OPENAI_API_KEY: PROVIDER_KEY, OPENAI_BASE_URL: upstream.baseUrl } });
    client = new OpenAI({ baseURL: proxy.baseURL, apiKey: (await proxy.createKey()).key, maxRetries: 0 });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it("sends any model name to the upstream unchanged, with the provider key; JSON, streams and embeddings", async () => {
    const answer = await client.chat.completions.create({
      model: "gpt-4o-2024-11-20",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(answer.choices[0].message.content).toBe("Echo: hi");
    const sent = upstream.requests.at(-1)!;
    expect(sent.body.model).toBe("gpt-4o-2024-11-20");
    expect(sent.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);

    const stream = await client.chat.completions.create({
      model: "some-future-model",
      stream: true,
      messages: [{ role: "user", content: "a b" }],
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    expect(text).toBe("Echo: a b");
    expect(upstream.requests.at(-1)!.body.model).toBe("some-future-model");

    const embedding = await client.embeddings.create({
      model: "text-embedding-3-large",
      input: "x",
      encoding_format: "float",
    });
    expect(embedding.data).toHaveLength(1);
    expect(upstream.requests.at(-1)!.body.model).toBe("text-embedding-3-large");

    const rows = await proxy.usageRows();
    expect(rows.filter((r) => r.provider === "openai").map((r) => r.requested_model)).toEqual([
      "gpt-4o-2024-11-20",
      "some-future-model",
      "text-embedding-3-large",
    ]);
  });

  it("the built-in mock models stay on the mock; /v1/models/{id} answers a name it would route", async () => {
    const before = upstream.requests.length;
    const mock = await client.chat.completions.create({
      model: "mock-chat",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(mock.choices[0].message.content?.length).toBeGreaterThan(0);
    expect(upstream.requests.length).toBe(before);
    const model = await client.models.retrieve("gpt-4o-2024-11-20");
    expect(model).toMatchObject({ id: "gpt-4o-2024-11-20", object: "model", owned_by: "openai" });
  });

  it("names the upstream refuses (or absurdly long ones) are `other` in every metric: no series for good per name", async () => {
    const junk = [`scan-${"y".repeat(50_000)}`, "made-up-a", "made-up-b"];
    upstream.behave({
      kind: "status",
      status: 404,
      body: { error: { message: "no such model", code: "model_not_found" } },
    });
    try {
      for (const model of junk)
        await client.chat.completions
          .create({ model, messages: [{ role: "user", content: "hi" }] })
          .catch(() => null);
    } finally {
      upstream.behave({ kind: "ok" });
    }
    await client.chat.completions.create({
      model: "served-model",
      messages: [{ role: "user", content: "hi" }],
    });
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    const labelled = new Set([...metrics.matchAll(/model="([^"]*)"/g)].map((m) => m[1]));
    for (const name of junk) expect(labelled.has(name)).toBe(false);
    expect(labelled.has("other")).toBe(true);
    expect(labelled.has("served-model")).toBe(true);
    expect(metrics.length).toBeLessThan(200_000);
  });
});
