import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startFakeAnthropic, type FakeAnthropic } from "../../helpers/fake-anthropic";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { ConfigError, loadConfig } from "../../../service/config";
import { startProxy, type TestProxy } from "../../helpers/proxy";

const ANTHROPIC_KEY = "anthropic-test-credential-0123456789";

describe("the anthropic provider: OpenAI clients talk to the Messages API through the proxy", () => {
  let anthropic: FakeAnthropic;
  let backup: FakeUpstream;
  let proxy: TestProxy;
  let client: OpenAI;

  beforeAll(async () => {
    anthropic = await startFakeAnthropic();
    backup = await startFakeUpstream();
    proxy = await startProxy({
      env: { ANTHROPIC_API_KEY: ANTHROPIC_KEY },
      configYaml: [
        "providers:",
        `  claude: { type: anthropic, base_url: "${anthropic.baseUrl}", api_key_env: ANTHROPIC_API_KEY, max_retries: 0, timeout_ms: 2000 }`,
        `  backup: { type: openai, base_url: "${backup.baseUrl}", max_retries: 0 }`,
        "models:",
        "  - { name: claude, provider: claude, model: claude-sonnet-5-5, fallbacks: [backup-model] }",
        "  - { name: backup-model, provider: backup }",
      ].join("\n"),
    });
    const { key } = await proxy.createKey();
    client = new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
  });
  beforeEach(() => anthropic.behave({ kind: "ok" }));
  afterAll(async () => {
    await proxy?.close();
    await anthropic?.close();
    await backup?.close();
  });

  const sent = () => anthropic.requests.at(-1)!;

  it("JSON: translated request and answer; Anthropic usage (cache reads included) becomes prompt tokens", async () => {
    const res = await client.chat.completions.create({
      model: "claude",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "developer", content: "Answer in English." },
        { role: "user", content: "hello there" },
      ],
      temperature: 0.2,
      stop: "END",
      user: "end-user-7",
      seed: 42,
      reasoning_effort: "high",
    });
    expect(res.choices[0].message.content).toBe("Echo: hello there");
    expect(res.choices[0].finish_reason).toBe("stop");
    expect(res.usage).toMatchObject({ prompt_tokens: 15, completion_tokens: 3, total_tokens: 18 });
    const { headers, body } = sent();
    expect(headers["x-api-key"]).toBe(ANTHROPIC_KEY);
    expect(headers["anthropic-version"]).toBe("2023-06-01");
    expect(headers.authorization).toBeUndefined();
    expect(body).toEqual({
      model: "claude-sonnet-5-5",
      system: "Be brief.\n\nAnswer in English.",
      messages: [{ role: "user", content: [{ type: "text", text: "hello there" }] }],
      max_tokens: 4096,
      stop_sequences: ["END"],
      metadata: { user_id: "end-user-7" },
      output_config: { effort: "high" },
      // Automatic prompt caching (prompt_caching, on by default).
      cache_control: { type: "ephemeral" },
    });
    const rows = (await proxy.usageRows()).filter((r) => r.served_model === "claude" && !r.stream);
    expect(rows.at(-1)).toMatchObject({
      status: 200,
      prompt_tokens: 15,
      completion_tokens: 3,
      provider: "claude",
    });
  });

  it("streams: Anthropic events re-framed as chunks; usage chunk when asked; row recorded", async () => {
    const before = (await proxy.usageRows()).length;
    const stream = await client.chat.completions.create({
      model: "claude",
      messages: [{ role: "user", content: "stream me please" }],
      max_completion_tokens: 50,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    const finishes: string[] = [];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.choices[0]?.finish_reason) finishes.push(chunk.choices[0].finish_reason);
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe("Echo: stream me please");
    expect(finishes).toEqual(["stop"]);
    expect(usage).toMatchObject({ prompt_tokens: 15, completion_tokens: 4 });
    expect(sent().body).toMatchObject({ stream: true, max_tokens: 50 });
    const rows = await proxy.waitForUsageRows(before + 1);
    expect(rows.at(-1)).toMatchObject({ stream: true, prompt_tokens: 15, completion_tokens: 4, status: 200 });
  });

  it("tools: definitions and choice translated; tool_use comes back as tool_calls (JSON and stream)", async () => {
    const tools: OpenAI.ChatCompletionTool[] = [
      {
        type: "function",
        function: { name: "lookup", description: "Find a thing", parameters: { type: "object" } },
      },
    ];
    const json = await client.chat.completions.create({
      model: "claude",
      tools,
      tool_choice: { type: "function", function: { name: "lookup" } },
      parallel_tool_calls: false,
      messages: [{ role: "user", content: "find the order" }],
    });
    const call = json.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(json.choices[0].finish_reason).toBe("tool_calls");
    expect(json.choices[0].message.content).toBeNull();
    expect(call).toMatchObject({ id: "toolu_1", type: "function", function: { name: "lookup" } });
    expect(JSON.parse(call.function.arguments)).toEqual({ query: "find the order" });
    expect(sent().body.tools).toEqual([
      { name: "lookup", description: "Find a thing", input_schema: { type: "object" } },
    ]);
    expect(sent().body.tool_choice).toEqual({
      type: "tool",
      name: "lookup",
      disable_parallel_tool_use: true,
    });

    const stream = await client.chat.completions.create({
      model: "claude",
      tools,
      stream: true,
      messages: [{ role: "user", content: "please use a tool" }],
    });
    let args = "";
    let name = "";
    let finish = "";
    for await (const chunk of stream) {
      const t = chunk.choices[0]?.delta?.tool_calls?.[0];
      if (t?.function?.name) name = t.function.name;
      args += t?.function?.arguments ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(name).toBe("lookup");
    expect(JSON.parse(args)).toEqual({ query: "please use a tool" });
    expect(finish).toBe("tool_calls");
  });

  it("tool_choice allowed_tools: the tools are cut down to the allowed ones; required with one becomes that tool", async () => {
    const tools: OpenAI.ChatCompletionTool[] = ["lookup", "order", "refund"].map((name) => ({
      type: "function",
      function: { name, parameters: { type: "object" } },
    }));
    const allowed = (mode: "auto" | "required", names: string[]) =>
      ({
        type: "allowed_tools",
        allowed_tools: { mode, tools: names.map((name) => ({ type: "function", function: { name } })) },
      }) as unknown as OpenAI.ChatCompletionToolChoiceOption;
    await client.chat.completions.create({
      model: "claude",
      tools,
      tool_choice: allowed("auto", ["lookup", "refund"]),
      messages: [{ role: "user", content: "hi" }],
    });
    expect(sent().body.tools.map((t: { name: string }) => t.name)).toEqual(["lookup", "refund"]);
    expect(sent().body.tool_choice).toEqual({ type: "auto" });
    await client.chat.completions.create({
      model: "claude",
      tools,
      tool_choice: allowed("required", ["order", "refund"]),
      messages: [{ role: "user", content: "hi" }],
    });
    expect(sent().body.tool_choice).toEqual({ type: "any" });
    const one = await client.chat.completions.create({
      model: "claude",
      tools,
      tool_choice: allowed("required", ["refund"]),
      messages: [{ role: "user", content: "hi" }],
    });
    expect(sent().body.tools.map((t: { name: string }) => t.name)).toEqual(["refund"]);
    expect(sent().body.tool_choice).toEqual({ type: "tool", name: "refund" });
    expect(one.choices[0].message.tool_calls?.[0]).toMatchObject({ function: { name: "refund" } });
  });

  it("a tool round trip becomes tool_use and tool_result blocks in alternating turns", async () => {
    const res = await client.chat.completions.create({
      model: "claude",
      messages: [
        { role: "user", content: "find the order" },
        {
          role: "assistant",
          content: "Looking.",
          tool_calls: [
            { id: "toolu_1", type: "function", function: { name: "lookup", arguments: '{"id":7}' } },
          ],
        },
        { role: "tool", tool_call_id: "toolu_1", content: "order 7 shipped" },
        { role: "user", content: "and now?" },
      ],
    });
    expect(res.choices[0].message.content).toBe("Echo: tool said order 7 shipped and now?");
    expect(sent().body.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "find the order" }] },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Looking." },
          { type: "tool_use", id: "toolu_1", name: "lookup", input: { id: 7 } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_1", content: "order 7 shipped" },
          { type: "text", text: "and now?" },
        ],
      },
    ]);
  });

  it("response_format json_schema becomes Anthropic structured outputs (output_config.format)", async () => {
    const schema = { type: "object", properties: { query: { type: "string" } } };
    const res = await client.chat.completions.create({
      model: "claude",
      messages: [{ role: "user", content: "give json" }],
      response_format: { type: "json_schema", json_schema: { name: "answer", schema } },
    });
    expect(res.choices[0].message.content).toBe("Echo: give json");
    expect(sent().body.output_config).toEqual({
      format: { type: "json_schema", schema: { ...schema, additionalProperties: false } },
    });
    expect(sent().body.tools).toBeUndefined();
  });

  it("images: data URLs become base64 blocks, other URLs url blocks", async () => {
    await client.chat.completions.create({
      model: "claude",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "what is this" },
            { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
            { type: "image_url", image_url: { url: "https://example.com/cat.jpg" } },
          ],
        },
      ],
    });
    expect(sent().body.messages[0].content).toEqual([
      { type: "text", text: "what is this" },
      { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
      { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } },
    ]);
  });

  it("what Anthropic cannot do is a 400 naming the field, and nothing is sent", async () => {
    const calls = anthropic.requests.length;
    const err = await client.chat.completions
      .create({ model: "claude", n: 2, messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).error).toMatchObject({
      code: "unsupported_by_provider",
      param: "n",
    });
    expect(anthropic.requests.length).toBe(calls);
  });

  it("Anthropic's own 400 comes back with its message; 529 overloaded falls back to the next deployment", async () => {
    anthropic.behave({
      kind: "status",
      status: 400,
      body: { type: "error", error: { type: "invalid_request_error", message: "max_tokens: too large" } },
    });
    const bad = await client.chat.completions
      .create({ model: "claude", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as Error).message).toContain("max_tokens: too large");

    anthropic.behave({
      kind: "status",
      status: 529,
      body: { type: "error", error: { type: "overloaded_error", message: "Overloaded" } },
    });
    const res = await client.chat.completions.create({
      model: "claude",
      messages: [{ role: "user", content: "fall back please" }],
    });
    expect(res.choices[0].message.content).toBe("Echo: fall back please");
    const rows = await proxy.usageRows();
    expect(rows.at(-1)).toMatchObject({
      requested_model: "claude",
      served_model: "backup-model",
      status: 200,
    });
  });

  it("an error event mid-stream ends the stream with an error and the row says so", async () => {
    anthropic.behave({ kind: "stream-error-after", events: 3 });
    const before = (await proxy.usageRows()).length;
    const res = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${(await proxy.createKey()).key}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({
        model: "claude",
        stream: true,
        messages: [{ role: "user", content: "one two three" }],
      }),
    });
    const text = await res.text();
    expect(text).toContain('"content":"Echo: "');
    expect(text).toContain("upstream_stream_error");
    const rows = await proxy.waitForUsageRows(before + 1);
    expect(rows.at(-1)).toMatchObject({ requested_model: "claude", error_code: "upstream_stream_error" });
  });

  it("PII is scrubbed before the Messages API sees it and restored in the translated stream", async () => {
    const stream = await client.chat.completions.create({
      model: "claude",
      stream: true,
      messages: [{ role: "user", content: "mail maria.gonzalez@example.com today" }],
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    expect(text).toBe("Echo: mail maria.gonzalez@example.com today");
    const upstreamText = JSON.stringify(sent().body);
    expect(upstreamText).not.toContain("maria.gonzalez");
    expect(upstreamText).toMatch(/<<PII_EMAIL_ADDRESS_[0-9a-f]{32}>>/);
  });
});

describe("anthropic provider config", () => {
  const yaml = (extra: string) =>
    `providers:\n  claude: { type: anthropic, api_key_env: ANTHROPIC_API_KEY${extra} }\nmodels:\n  - { name: claude, provider: claude }\n`;

  it("defaults: Anthropic's API, version 2023-06-01, 4096 max tokens; the key from the named variable", () => {
    const config = loadConfig({ env: { ANTHROPIC_API_KEY: ANTHROPIC_KEY }, fileText: yaml("") });
    expect(config.providers.claude).toMatchObject({
      type: "anthropic",
      baseUrl: "https://api.anthropic.com/v1",
      version: "2023-06-01",
      defaultMaxTokens: 4096,
      promptCaching: true,
      apiKey: ANTHROPIC_KEY,
    });
    const off = loadConfig({
      env: { ANTHROPIC_API_KEY: ANTHROPIC_KEY },
      fileText: yaml(", prompt_caching: false"),
    });
    expect(off.providers.claude).toMatchObject({ promptCaching: false });
  });

  it("a missing key variable, a bad value, or an embedding model on Anthropic stop the start, each named", () => {
    const problems = (env: Record<string, string>, text: string) => {
      try {
        loadConfig({ env, fileText: text });
        return [];
      } catch (error) {
        return (error as ConfigError).problems;
      }
    };
    expect(problems({}, yaml(""))).toEqual([
      "config providers.claude.api_key_env: environment variable ANTHROPIC_API_KEY is not set",
    ]);
    expect(problems({ ANTHROPIC_API_KEY: "k" }, yaml(", default_max_tokens: 0")).join()).toContain(
      "providers.claude.default_max_tokens",
    );
    expect(
      problems(
        { ANTHROPIC_API_KEY: "k" },
        `${yaml("")}  - { name: embed, provider: claude, kind: embedding }\n`,
      ).join(),
    ).toContain('config models[1].provider: "claude" is an anthropic provider, which has no embeddings API');
  });
});
