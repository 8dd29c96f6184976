import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTwoProviderProxy, type FakeAnthropic } from "../../helpers/fake-anthropic";
import { type FakeUpstream, FAKE_USAGE } from "../../helpers/fake-upstream";
import type { TestProxy } from "../../helpers/proxy";

describe("POST /v1/responses: the official openai SDK's Responses API through the proxy, to any provider", () => {
  let upstream: FakeUpstream;
  let claude: FakeAnthropic;
  let proxy: TestProxy;
  let close: () => Promise<void>;
  let client: OpenAI;

  beforeAll(async () => {
    ({ upstream, claude, proxy, close } = await startTwoProviderProxy());
    const { key } = await proxy.createKey({ scopes: ["chat"] });
    client = new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    await close?.();
  });

  const lastSent = () => upstream.requests.at(-1)!.body;
  const tools: OpenAI.Responses.Tool[] = [
    {
      type: "function",
      name: "lookup",
      description: "Find",
      parameters: { type: "object", properties: {} },
      strict: false,
    },
  ];

  it("JSON: a Response with output_text and usage; the upstream got the translated chat request", async () => {
    const res = await client.responses.create({
      model: "gpt-4o-mini",
      instructions: "Be brief.",
      input: "hello there",
      max_output_tokens: 50,
      text: { format: { type: "json_schema", name: "r", schema: { type: "object" }, strict: true } },
    });
    expect(res.object).toBe("response");
    expect(res.status).toBe("completed");
    // The Response repeats what was asked, as the API does (typed clients read these).
    expect(res).toMatchObject({
      instructions: "Be brief.",
      max_output_tokens: 50,
      tool_choice: "auto",
      tools: [],
      parallel_tool_calls: true,
    });
    expect(res.output_text).toBe("Echo: hello there");
    expect(res.usage).toMatchObject({
      input_tokens: FAKE_USAGE.prompt_tokens,
      output_tokens: FAKE_USAGE.completion_tokens,
    });
    expect(lastSent()).toMatchObject({
      model: "upstream-model",
      max_completion_tokens: 50,
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "hello there" },
      ],
      response_format: {
        type: "json_schema",
        json_schema: { name: "r", schema: { type: "object" }, strict: true },
      },
    });
    const rows = (await proxy.usageRows()).filter((r) => r.route === "responses");
    expect(rows.at(-1)).toMatchObject({ status: 200, prompt_tokens: 11, completion_tokens: 7 });
  });

  it("streams Responses events the SDK assembles into the final Response", async () => {
    const stream = client.responses.stream({ model: "gpt-4o-mini", input: "stream me please" });
    const types: string[] = [];
    stream.on("event", (e) => types.push(e.type));
    const final = await stream.finalResponse();
    expect(final.output_text).toBe("Echo: stream me please");
    expect(final.status).toBe("completed");
    expect(final.usage).toMatchObject({ input_tokens: 11, output_tokens: 7 });
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(types).toContain("response.output_text.delta");
    expect(types.filter((t) => t === "response.output_item.added")).toHaveLength(1);
  });

  it("function calls out (JSON and stream) and a function_call_output round trip in", async () => {
    const res = await client.responses.create({ model: "gpt-4o-mini", tools, input: "find order 7" });
    const call = res.output.find(
      (o) => o.type === "function_call",
    ) as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call).toMatchObject({ call_id: "call_1", name: "lookup" });
    expect(JSON.parse(call.arguments)).toEqual({ query: "find order 7" });
    expect(lastSent().tools).toEqual([
      {
        type: "function",
        function: {
          name: "lookup",
          description: "Find",
          parameters: { type: "object", properties: {} },
          strict: false,
        },
      },
    ]);

    const streamed = await client.responses
      .stream({ model: "gpt-4o-mini", tools, input: "find order 8" })
      .finalResponse();
    const streamedCall = streamed.output.find(
      (o) => o.type === "function_call",
    ) as OpenAI.Responses.ResponseFunctionToolCall;
    expect(JSON.parse(streamedCall.arguments)).toEqual({ query: "find order 8" });

    const answer = await client.responses.create({
      model: "gpt-4o-mini",
      tools,
      input: [
        { role: "user", content: "find order 7" },
        { type: "function_call", call_id: "call_1", name: "lookup", arguments: '{"query":"find order 7"}' },
        { type: "function_call_output", call_id: "call_1", output: "shipped" },
      ],
    });
    expect(answer.output_text).toBe("Tool said: shipped");
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
    ]);
  });

  it("what needs stored state or hosted tools is a 400 naming the field, and nothing is sent", async () => {
    const calls = upstream.requests.length;
    const stateful = await client.responses
      .create({ model: "gpt-4o-mini", input: "hi", previous_response_id: "resp_123" })
      .catch((e: unknown) => e);
    expect(stateful).toBeInstanceOf(OpenAI.BadRequestError);
    expect((stateful as InstanceType<typeof OpenAI.BadRequestError>).error).toMatchObject({
      param: "previous_response_id",
      code: "unsupported_parameter",
    });
    const hosted = await client.responses
      .create({ model: "gpt-4o-mini", input: "hi", tools: [{ type: "web_search" }] })
      .catch((e: unknown) => e);
    expect(hosted).toBeInstanceOf(OpenAI.BadRequestError);
    expect((hosted as InstanceType<typeof OpenAI.BadRequestError>).error).toMatchObject({
      param: "tools[0]",
    });
    expect(upstream.requests.length).toBe(calls);
  });

  it("a Responses client reaches an Anthropic model through both translations", async () => {
    const res = await client.responses.create({
      model: "claude-sonnet-5-5",
      instructions: "Be brief.",
      input: "round trip",
    });
    expect(res.output_text).toBe("Echo: round trip");
    expect(res.usage).toMatchObject({ input_tokens: 15, output_tokens: 3 });
    expect(claude.requests.at(-1)!.body).toMatchObject({
      system: "Be brief.",
      messages: [{ role: "user", content: [{ type: "text", text: "round trip" }] }],
    });
  });
});
