import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTwoProviderProxy, type FakeAnthropic } from "../../helpers/fake-anthropic";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, type TestProxy } from "../../helpers/proxy";
import { messagesToChat } from "../../../service/lib/anthropic-messages";
import { countChatTokens } from "../../../service/lib/tokens";

describe("POST /v1/messages: the official Anthropic SDK through the proxy, to any provider", () => {
  let upstream: FakeUpstream;
  let claude: FakeAnthropic;
  let proxy: TestProxy;
  let close: () => Promise<void>;
  let client: Anthropic;
  let key: string;

  beforeAll(async () => {
    ({ upstream, claude, proxy, close } = await startTwoProviderProxy());
    key = (await proxy.createKey({ scopes: ["chat"] })).key;
    // The SDK sends x-api-key, as Claude Code and every Anthropic client do.
    client = new Anthropic({ apiKey: key, baseURL: proxy.url, maxRetries: 0 });
  });
  afterAll(async () => {
    await close?.();
  });

  const lastSent = () => upstream.requests.at(-1)!.body;

  it("a Message from an OpenAI-compatible model: translated request, Message answer, usage recorded", async () => {
    const msg = await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 100,
      system: "Be brief.",
      stop_sequences: ["END"],
      output_config: {
        effort: "low",
        format: { type: "json_schema", schema: { type: "object", properties: { a: { type: "string" } } } },
      },
      metadata: { user_id: "u-1" },
      messages: [{ role: "user", content: "hello there" }],
    });
    expect(msg).toMatchObject({
      type: "message",
      role: "assistant",
      model: "gpt-4o-mini",
      content: [{ type: "text", text: "Echo: hello there" }],
      stop_reason: "end_turn",
      usage: { input_tokens: 11, output_tokens: 7 },
    });
    expect(lastSent()).toMatchObject({
      model: "upstream-model",
      // As o-series and gpt-5 models require (they refuse max_tokens).
      max_completion_tokens: 100,
      stop: ["END"],
      user: "u-1",
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "output",
          // Anthropic accepts an optional property; OpenAI's strict mode would refuse the schema.
          strict: false,
          schema: { type: "object", properties: { a: { type: "string" } } },
        },
      },
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "hello there" },
      ],
    });
    expect(lastSent()).not.toHaveProperty("reasoning_effort");
    expect(lastSent()).not.toHaveProperty("max_tokens");
    const rows = (await proxy.usageRows()).filter((r) => r.route === "messages");
    expect(rows.at(-1)).toMatchObject({
      status: 200,
      requested_model: "gpt-4o-mini",
      prompt_tokens: 11,
      completion_tokens: 7,
    });
    // A schema that meets OpenAI's strict rules (every property required, no additional ones) is sent strict.
    const strictSchema = {
      type: "object" as const,
      properties: {
        a: {
          type: "array",
          items: {
            type: "object",
            properties: { b: { type: "number" } },
            required: ["b"],
            additionalProperties: false,
          },
        },
      },
      required: ["a"],
      additionalProperties: false,
    };
    const created = await client.messages
      .create({
        model: "gpt-4o-mini",
        max_tokens: 100,
        output_config: { format: { type: "json_schema", schema: strictSchema } },
        messages: [{ role: "user", content: "strict please" }],
      })
      .withResponse();
    expect(lastSent().response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "output", strict: true, schema: strictSchema },
    });
    // The SDK finds the proxy's request id where Anthropic puts it.
    expect(created.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect((created.data as { _request_id?: string })._request_id).toBe(created.request_id);
  });

  it("streams a valid Messages event sequence that the SDK assembles", async () => {
    const stream = client.messages.stream({
      model: "gpt-4o-mini",
      max_tokens: 100,
      messages: [{ role: "user", content: "stream me please" }],
    });
    const types: string[] = [];
    let started = -1;
    stream.on("streamEvent", (e) => {
      types.push(e.type);
      if (e.type === "message_start") started = e.message.usage.input_tokens;
    });
    const final = await stream.finalMessage();
    // Before the provider's usage: an estimate from the request (no limit here, so no tokenizer count), not 0.
    expect(started).toBeGreaterThan(5);
    expect(started).toBeLessThan(100);
    expect(final.content).toHaveLength(1);
    expect(final.content[0]).toMatchObject({ type: "text", text: "Echo: stream me please" });
    expect(final.stop_reason).toBe("end_turn");
    expect(final.usage).toMatchObject({ input_tokens: 11, output_tokens: 7 });
    expect(types[0]).toBe("message_start");
    expect(types.slice(-2)).toEqual(["message_delta", "message_stop"]);
    expect(types.filter((t) => t === "content_block_start")).toHaveLength(1);
    expect(lastSent().stream_options).toEqual({ include_usage: true });
  });

  it("tools: tool_use out (JSON and stream), tool_result back in as a tool message", async () => {
    const tools: Anthropic.Tool[] = [
      { name: "lookup", description: "Find", input_schema: { type: "object", properties: {} } },
    ];
    const msg = await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 100,
      tools,
      tool_choice: { type: "any", disable_parallel_tool_use: true },
      messages: [{ role: "user", content: "find order 7" }],
    });
    expect(msg.stop_reason).toBe("tool_use");
    expect(msg.content).toEqual([
      { type: "tool_use", id: "call_1", name: "lookup", input: { query: "find order 7" } },
    ]);
    expect(lastSent()).toMatchObject({
      tools: [
        {
          type: "function",
          function: { name: "lookup", description: "Find", parameters: tools[0].input_schema },
        },
      ],
      tool_choice: "required",
      parallel_tool_calls: false,
    });

    const streamed = await client.messages
      .stream({
        model: "gpt-4o-mini",
        max_tokens: 100,
        tools,
        messages: [{ role: "user", content: "find order 8" }],
      })
      .finalMessage();
    expect(streamed.content).toMatchObject([
      { type: "tool_use", name: "lookup", input: { query: "find order 8" } },
    ]);
    expect(streamed.stop_reason).toBe("tool_use");

    await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 100,
      tools,
      messages: [
        { role: "user", content: "find order 7" },
        { role: "assistant", content: msg.content },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "call_1", content: "shipped" },
            { type: "text", text: "thanks" },
          ],
        },
      ],
    });
    expect(lastSent().messages).toEqual([
      { role: "user", content: "find order 7" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_1",
            type: "function",
            function: { name: "lookup", arguments: '{"query":"find order 7"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: "shipped" },
      { role: "user", content: "thanks" },
    ]);
    // A tool result alone: the model answers from it.
    const answer = await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 100,
      tools,
      messages: [
        { role: "user", content: "find order 7" },
        { role: "assistant", content: msg.content },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "call_1", content: "shipped" }] },
      ],
    });
    expect(answer.content).toEqual([{ type: "text", text: "Tool said: shipped" }]);
    expect(answer.stop_reason).toBe("end_turn");
  });

  it("images become image_url parts (base64 as a data URL)", async () => {
    await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 10,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "what is this" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
          ],
        },
      ],
    });
    expect(lastSent().messages[0].content).toEqual([
      { type: "text", text: "what is this" },
      { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
    ]);
  });

  it("a text document reaches the model as text, title first", async () => {
    const answer = await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 10,
      messages: [
        {
          role: "user",
          content: [
            {
              type: "document",
              title: "Notes",
              source: { type: "text", media_type: "text/plain", data: "Ship on Friday." },
            },
            { type: "text", text: "When do we ship?" },
          ],
        },
      ],
    });
    expect(answer.content[0]).toMatchObject({ type: "text" });
    expect(lastSent().messages).toEqual([
      { role: "user", content: "Document: Notes\nShip on Friday.\nWhen do we ship?" },
    ]);
    // A search tool's result holding a document: its text reaches the model too.
    await client.messages.create({
      model: "gpt-4o-mini",
      max_tokens: 10,
      messages: [
        { role: "user", content: "Search the notes." },
        {
          role: "assistant",
          content: [{ type: "tool_use", id: "t1", name: "search", input: { q: "ship" } }],
        },
        {
          role: "user",
          content: [
            {
              type: "tool_result",
              tool_use_id: "t1",
              content: [
                {
                  type: "document",
                  title: "Notes",
                  source: { type: "text", media_type: "text/plain", data: "Ship on Friday." },
                },
              ],
            } as never,
          ],
        },
      ],
    });
    expect(lastSent().messages.at(-1)).toEqual({
      role: "tool",
      tool_call_id: "t1",
      content: "Document: Notes\nShip on Friday.",
    });
  });

  it("a failed tool call (is_error): an Anthropic provider gets the flag, a chat provider an `Error: ` prefix", async () => {
    const history = (model: string) => ({
      model,
      max_tokens: 10,
      messages: [
        { role: "user" as const, content: "Look up order 7 for Sarah Connor." },
        {
          role: "assistant" as const,
          content: [{ type: "tool_use" as const, id: "t1", name: "lookup", input: { order: 7 } }],
        },
        {
          role: "user" as const,
          content: [
            {
              type: "tool_result" as const,
              tool_use_id: "t1",
              is_error: true,
              content: "Error: order 7 not found",
            },
            { type: "tool_result" as const, tool_use_id: "t2", content: "fine" },
          ],
        },
      ],
    });
    // Through the PII scrub (on by default, it copies the messages it scrubs): the flag survives the copy.
    await client.messages.create(history("claude-sonnet-5-5"));
    const sent = claude.requests.at(-1)!.body.messages.at(-1).content;
    expect(sent[0]).toEqual({
      type: "tool_result",
      tool_use_id: "t1",
      content: "Error: order 7 not found",
      is_error: true,
    });
    expect(sent[1]).toEqual({ type: "tool_result", tool_use_id: "t2", content: "fine" });

    await client.messages.create(history("gpt-4o-mini"));
    const tools = lastSent().messages.filter((m: { role: string }) => m.role === "tool");
    // The symbol that marks the failure is never serialized: the chat provider sees only the prefixed text.
    expect(tools).toEqual([
      { role: "tool", tool_call_id: "t1", content: "Error: Error: order 7 not found" },
      { role: "tool", tool_call_id: "t2", content: "fine" },
    ]);
  });

  it("errors come in Anthropic's shape, with the SDK's error classes", async () => {
    const missing = await client.messages
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] } as never)
      .catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(Anthropic.BadRequestError);
    expect((missing as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error" },
    });
    expect((missing as Error).message).toContain("max_tokens");

    const unknownModel = await client.messages
      .create({ model: "nope", max_tokens: 5, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(unknownModel).toBeInstanceOf(Anthropic.NotFoundError);

    const badKey = new Anthropic({ apiKey: "sk-llmp-not-a-key", baseURL: proxy.url, maxRetries: 0 });
    const denied = await badKey.messages
      .create({ model: "gpt-4o-mini", max_tokens: 5, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(Anthropic.AuthenticationError);
    expect((denied as InstanceType<typeof Anthropic.AuthenticationError>).error).toMatchObject({
      error: { type: "authentication_error" },
    });

    const doc = await client.messages
      .create({
        model: "gpt-4o-mini",
        max_tokens: 5,
        messages: [
          {
            role: "user",
            content: [
              {
                type: "document",
                source: { type: "base64", media_type: "application/pdf", data: "JVBERi0=" },
              },
            ],
          },
        ],
      })
      .catch((e: unknown) => e);
    expect(doc).toBeInstanceOf(Anthropic.BadRequestError);
    expect((doc as Error).message).toContain("document");
  });

  it("a failure mid-stream ends the event stream with an error event", async () => {
    upstream.behave({ kind: "stream-cut", okChunks: 2 });
    const stream = client.messages.stream({
      model: "gpt-4o-mini",
      max_tokens: 100,
      messages: [{ role: "user", content: "one two three four" }],
    });
    await expect(stream.finalMessage()).rejects.toThrow();
    upstream.behave({ kind: "ok" });
    const rows = (await proxy.usageRows()).filter((r) => r.route === "messages");
    expect(rows.at(-1)).toMatchObject({ error_code: "upstream_stream_error" });
  });

  it("the Anthropic SDK lists and retrieves the configured models", async () => {
    const modelsKey = (await proxy.createKey({ scopes: ["models"] })).key;
    const anthropicModels = new Anthropic({ apiKey: modelsKey, baseURL: proxy.url, maxRetries: 0 });
    const ids: string[] = [];
    for await (const m of anthropicModels.models.list()) ids.push(m.id);
    expect(ids.sort()).toEqual(["claude-sonnet-5-5", "gpt-4o-mini"]);
    const one = await anthropicModels.models.retrieve("claude-sonnet-5-5");
    expect(one).toMatchObject({ id: "claude-sonnet-5-5", type: "model", display_name: "claude-sonnet-5-5" });
    expect(Number.isNaN(Date.parse(one.created_at))).toBe(false);
  });

  it("count_tokens counts the translated prompt with the proxy's tokenizer, without calling anyone", async () => {
    const calls = upstream.requests.length;
    const params = {
      model: "gpt-4o-mini",
      system: "You are a helpful assistant.",
      messages: [{ role: "user" as const, content: "How many tokens is this sentence?" }],
    };
    const counted = await client.messages.countTokens(params);
    expect(counted.input_tokens).toBe(countChatTokens(messagesToChat({ ...params, max_tokens: 1 })));
    const longer = await client.messages.countTokens({
      ...params,
      messages: [
        { role: "user", content: "How many tokens is this much longer sentence, with more words in it?" },
      ],
    });
    expect(longer.input_tokens).toBeGreaterThan(counted.input_tokens);
    expect(upstream.requests.length).toBe(calls);
    const unknown = await client.messages.countTokens({ ...params, model: "nope" }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(Anthropic.NotFoundError);
  });

  it("Anthropic SDK → proxy → the anthropic provider: both translations compose", async () => {
    const msg = await client.messages.create({
      model: "claude-sonnet-5-5",
      max_tokens: 64,
      system: "Be brief.",
      messages: [{ role: "user", content: "round trip" }],
    });
    expect(msg.content).toEqual([{ type: "text", text: "Echo: round trip" }]);
    // The provider's own accounting survives both translations: 10 uncached input tokens + 5 read from its cache.
    expect(msg.usage).toMatchObject({ input_tokens: 10, cache_read_input_tokens: 5, output_tokens: 3 });
    expect(claude.requests.at(-1)!.body).toMatchObject({
      model: "claude-sonnet-5-5",
      system: "Be brief.",
      max_tokens: 64,
      messages: [{ role: "user", content: [{ type: "text", text: "round trip" }] }],
    });
    const streamed = await client.messages
      .stream({
        model: "claude-sonnet-5-5",
        max_tokens: 64,
        messages: [{ role: "user", content: "and streamed" }],
      })
      .finalMessage();
    expect(streamed.content).toMatchObject([{ type: "text", text: "Echo: and streamed" }]);
  });

  it("an Anthropic overload mid-stream reaches the client as overloaded_error (which its SDK retries), not api_error", async () => {
    claude.behave({ kind: "stream-error-after", events: 3 });
    try {
      const error = await client.messages
        .stream({
          model: "claude-sonnet-5-5",
          max_tokens: 64,
          messages: [{ role: "user", content: "a b c d" }],
        })
        .finalMessage()
        .then(
          () => null,
          (e: unknown) => e as Error,
        );
      expect(error).not.toBeNull();
      expect(JSON.stringify({ message: error!.message, ...(error as object) })).toContain("overloaded_error");
    } finally {
      claude.behave({ kind: "ok" });
    }
  });

  it("an Anthropic 529 before any answer (JSON or stream) reaches the client as a 529 overloaded_error, with Retry-After", async () => {
    claude.behave({
      kind: "status",
      status: 529,
      body: { type: "error", error: { type: "overloaded_error", message: "Overloaded" } },
      headers: { "retry-after": "7" },
    });
    try {
      for (const stream of [false, true]) {
        const error = await client.messages
          .create({
            model: "claude-sonnet-5-5",
            max_tokens: 64,
            stream,
            messages: [{ role: "user", content: "busy?" }],
          })
          .then(
            () => null,
            (e: unknown) => e as InstanceType<typeof Anthropic.APIError>,
          );
        expect(error).toBeInstanceOf(Anthropic.APIError);
        expect(error!.status).toBe(529);
        expect(error!.requestID).toMatch(/^[0-9a-f-]{36}$/);
        expect(error!.error).toMatchObject({ type: "error", error: { type: "overloaded_error" } });
        expect(error!.headers?.get("retry-after")).toBe("7");
      }
    } finally {
      claude.behave({ kind: "ok" });
    }
  });

  it("a matched stop sequence comes back as stop_reason stop_sequence with the sequence (JSON and stream)", async () => {
    const params = {
      model: "claude-sonnet-5-5",
      max_tokens: 64,
      stop_sequences: ["HALT"],
      messages: [{ role: "user" as const, content: "go on HALT and more" }],
    };
    const msg = await client.messages.create(params);
    expect(claude.requests.at(-1)!.body.stop_sequences).toEqual(["HALT"]);
    expect(msg).toMatchObject({ stop_reason: "stop_sequence", stop_sequence: "HALT" });
    expect(msg.content).toEqual([{ type: "text", text: "Echo: go on " }]);
    const streamed = await client.messages.stream(params).finalMessage();
    expect(streamed).toMatchObject({ stop_reason: "stop_sequence", stop_sequence: "HALT" });
    // Without a match: end_turn, no sequence.
    const plain = await client.messages.create({
      ...params,
      messages: [{ role: "user", content: "no stop" }],
    });
    expect(plain).toMatchObject({ stop_reason: "end_turn", stop_sequence: null });
  });
});

describe("POST /v1/messages under rate limits and the cache", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({
      // One worker: the in-process limiter divides budgets among the workers of a pod.
      env: { CACHE_ENABLED: "true", WORKERS: "1" },
      configYaml: [
        "providers:",
        `  fake: { type: openai, base_url: "${upstream.baseUrl}", max_retries: 0 }`,
        "models:",
        "  - { name: gpt-4o-mini, provider: fake }",
        "limits:",
        "  key: { requests_per_minute: 2 }",
      ].join("\n"),
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it("a repeated Message is a cache hit; over the budget the SDK gets a RateLimitError with retry-after", async () => {
    const client = new Anthropic({
      apiKey: (await proxy.createKey()).key,
      baseURL: proxy.url,
      maxRetries: 0,
    });
    const params = {
      model: "gpt-4o-mini",
      max_tokens: 20,
      messages: [{ role: "user" as const, content: "same" }],
    };
    const first = await client.messages.create(params).withResponse();
    expect(first.response.headers.get("x-cache")).toBe("miss");
    // The store happens after the response; give it a moment.
    await new Promise((r) => setTimeout(r, 100));
    const second = await client.messages.create(params).withResponse();
    expect(second.response.headers.get("x-cache")).toBe("hit");
    expect(second.data.content).toEqual(first.data.content);
    const limited = await client.messages.create(params).catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(Anthropic.RateLimitError);
    const err = limited as InstanceType<typeof Anthropic.RateLimitError>;
    expect(err.error).toMatchObject({ type: "error", error: { type: "rate_limit_error" } });
    expect(Number(err.headers?.get("retry-after"))).toBeGreaterThan(0);
    const rows = (await proxy.usageRows()).filter((r) => r.route === "messages");
    expect(rows.map((r) => r.status)).toEqual([200, 200, 429]);
  });
});
