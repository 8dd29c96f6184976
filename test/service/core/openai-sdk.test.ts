import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream, FAKE_USAGE } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

describe("the official openai SDK against the proxy", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let client: OpenAI;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [
        { name: "gpt-4o-mini", provider: "fake", model: "upstream-model" },
        { name: "text-embedding-3-small", provider: "fake", kind: "embedding" } as never,
      ]),
    });
    const { key } = await proxy.createKey({ scopes: ["chat", "embeddings", "models"] });
    client = new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it("answers a JSON chat completion and records one usage row with the provider's tokens", async () => {
    const res = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "hello there" }],
    });
    expect(res.choices[0].message.content).toBe("Echo: hello there");
    expect(res.usage).toMatchObject(FAKE_USAGE);
    expect(upstream.requests.at(-1)!.body.model).toBe("upstream-model");
    const rows = (await proxy.usageRows()).filter((r) => r.requested_model === "gpt-4o-mini" && !r.stream);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      status: 200,
      prompt_tokens: 11,
      completion_tokens: 7,
      served_model: "gpt-4o-mini",
    });
  });

  it("streams chunks that assemble into the answer; usage only when asked, but always recorded", async () => {
    const before = (await proxy.usageRows()).length;
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "stream me please" }],
      stream: true,
    });
    let text = "";
    let sawUsage = false;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) sawUsage = true;
    }
    expect(text).toBe("Echo: stream me please");
    expect(sawUsage).toBe(false);
    // The proxy asked the upstream for usage even though the client did not.
    expect(upstream.requests.at(-1)!.body.stream_options).toEqual({ include_usage: true });

    const withUsage = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "and usage" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: unknown = null;
    for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
    expect(usage).toMatchObject(FAKE_USAGE);

    const rows = await proxy.waitForUsageRows(before + 2);
    expect(rows.length - before).toBe(2);
    for (const r of rows.slice(before)) {
      expect(r).toMatchObject({ stream: true, status: 200, prompt_tokens: 11, completion_tokens: 7 });
    }
  });

  it("round-trips a tool call (JSON and streamed arguments)", async () => {
    const tools = [
      {
        type: "function" as const,
        function: {
          name: "lookup",
          parameters: { type: "object", properties: { query: { type: "string" } } },
        },
      },
    ];
    const first = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "weather in Paris" }],
      tools,
    });
    const call = first.choices[0].message.tool_calls![0];
    expect(call.type === "function" && JSON.parse(call.function.arguments)).toEqual({
      query: "weather in Paris",
    });
    const second = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [
        { role: "user", content: "weather in Paris" },
        first.choices[0].message,
        { role: "tool", tool_call_id: call.id, content: "sunny" },
      ],
      tools,
    });
    expect(second.choices[0].message.content).toBe("Tool said: sunny");

    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "streamed tool" }],
      tools,
      stream: true,
    });
    let args = "";
    for await (const chunk of stream)
      args += chunk.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? "";
    expect(JSON.parse(args)).toEqual({ query: "streamed tool" });
  });

  it("serves embeddings and the model list", async () => {
    const emb = await client.embeddings.create({ model: "text-embedding-3-small", input: ["a", "bb"] });
    expect(emb.data).toHaveLength(2);
    expect(emb.data[1].embedding).toHaveLength(8);
    const models = await client.models.list();
    expect(models.data.map((m) => m.id).sort()).toEqual(["gpt-4o-mini", "text-embedding-3-small"]);
    expect((await client.models.retrieve("gpt-4o-mini")).id).toBe("gpt-4o-mini");
    await expect(client.models.retrieve("nope")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it("maps 401, 403 and 404 to the SDK's error classes", async () => {
    const bad = new OpenAI({ apiKey: "sk-llmp-not-a-real-key", baseURL: proxy.baseURL, maxRetries: 0 });
    await expect(bad.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

    const { key } = await proxy.createKey({ scopes: ["models"] });
    const limited = new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
    const denied = limited.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "x" }],
    });
    await expect(denied).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);

    const missing = client.chat.completions.create({
      model: "no-such-model",
      messages: [{ role: "user", content: "x" }],
    });
    await expect(missing).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(missing).rejects.toMatchObject({ status: 404, code: "model_not_found" });
  });
});
