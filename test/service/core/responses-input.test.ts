import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTwoProviderProxy, type FakeAnthropic } from "../../helpers/fake-anthropic";
import type { FakeUpstream } from "../../helpers/fake-upstream";
import type { TestProxy } from "../../helpers/proxy";

/**
 * POST /v1/responses with a field of the wrong type (null or a number where an object belongs, an object where text
 * belongs, …): a 400 in OpenAI's shape naming the field and what it must be — not a 500 from a TypeError, and not
 * "[object Object]" sent upstream as text. Nothing reaches either upstream.
 */
describe("POST /v1/responses: a wrong-typed field is a 400 naming it, and nothing is sent upstream", () => {
  let upstream: FakeUpstream;
  let claude: FakeAnthropic;
  let proxy: TestProxy;
  let close: () => Promise<void>;
  let key: string;

  beforeAll(async () => {
    ({ upstream, claude, proxy, close } = await startTwoProviderProxy());
    key = (await proxy.createKey({ scopes: ["chat"] })).key;
  });
  afterAll(async () => {
    await close?.();
  });

  const M = "gpt-4o-mini";
  const CLAUDE = "claude-sonnet-5-5";
  const tools = [{ type: "function", name: "f" }];
  const message = (content: unknown) => ({
    model: M,
    input: [{ type: "message", role: "user", content }],
  });
  const item = (it: Record<string, unknown>, model = M) => ({
    model,
    input: [{ role: "user", content: "hi" }, it],
  });
  const call = (fields: Record<string, unknown>, model = M) =>
    item({ type: "function_call", call_id: "c1", name: "f", arguments: "{}", ...fields }, model);

  async function post(body: unknown): Promise<{ status: number; body: any }> {
    const res = await fetch(`${proxy.baseURL}/responses`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  }

  const sent = () => upstream.requests.length + claude.requests.length;

  async function expectRejected(body: unknown, param: string, message: RegExp): Promise<void> {
    const before = sent();
    const res = await post(body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toMatchObject({ type: "invalid_request_error", code: "invalid_value", param });
    expect(res.body.error.message).toContain(param);
    expect(res.body.error.message).toMatch(message);
    expect(sent()).toBe(before);
  }

  const cases: Array<[string, unknown, string, RegExp]> = [
    // message content parts
    [
      "a null content part",
      message([null]),
      "input[0].content[0]",
      /must be an object with a `type`.*not null/,
    ],
    ["a number content part", message([5]), "input[0].content[0]", /not a number/],
    ["a content part without a type", message([{ text: "hi" }]), "input[0].content[0].type", /missing/],
    [
      "input_text whose text is an object",
      message([{ type: "input_text", text: { a: 1 } }]),
      "input[0].content[0].text",
      /must be a string, not an object/,
    ],
    [
      "a refusal that is a list",
      {
        model: M,
        input: [
          { role: "user", content: "hi" },
          { type: "message", role: "assistant", content: [{ type: "refusal", refusal: ["no"] }] },
        ],
      },
      "input[1].content[0].refusal",
      /must be a string, not an array/,
    ],
    [
      "input_image whose image_url is an object",
      message([{ type: "input_image", image_url: { url: "https://example.com/a.png" } }]),
      "input[0].content[0].image_url",
      /must be a string/,
    ],
    [
      "input_image whose detail is a number",
      message([{ type: "input_image", image_url: "https://example.com/a.png", detail: 5 }]),
      "input[0].content[0].detail",
      /must be a string, not a number/,
    ],
    [
      "message content that is an object",
      message({ a: 1 }),
      "input[0].content",
      /must be a string or a list of content parts, not an object/,
    ],
    // input items
    [
      "an item whose type is a number",
      { model: M, input: [{ type: 5, role: "user", content: "hi" }] },
      "input[0].type",
      /must be a string, not a number/,
    ],
    [
      "an item with neither type nor role",
      { model: M, input: [{ content: "hi" }] },
      "input[0].type",
      /is missing: an input item needs a `type`/,
    ],
    [
      "a message whose role is an object",
      { model: M, input: [{ type: "message", role: { a: 1 }, content: "hi" }] },
      "input[0].role",
      /must be one of user, assistant, system, developer, not an object/,
    ],
    [
      "function_call arguments as an object",
      call({ arguments: { a: 1 } }),
      "input[1].arguments",
      /must be a string \(the call's arguments as JSON text\), not an object/,
    ],
    [
      "function_call arguments as an object, to an Anthropic model",
      call({ arguments: { a: 1 } }, CLAUDE),
      "input[1].arguments",
      /must be a string/,
    ],
    ["function_call arguments as a list", call({ arguments: [1] }), "input[1].arguments", /not an array/],
    ["function_call call_id as an object", call({ call_id: { a: 1 } }), "input[1].call_id", /not an object/],
    ["function_call name as a list", call({ name: ["f"] }), "input[1].name", /not an array/],
    [
      "custom_tool_call input as an object",
      item({ type: "custom_tool_call", call_id: "c1", name: "p", input: { a: 1 } }),
      "input[1].input",
      /must be a string, not an object/,
    ],
    [
      "function_call_output output [null]",
      item({ type: "function_call_output", call_id: "a", output: [null] }),
      "input[1].output[0]",
      /must be an object.*not null/,
    ],
    [
      "function_call_output output part whose text is an object",
      item({ type: "function_call_output", call_id: "a", output: [{ type: "input_text", text: { a: 1 } }] }),
      "input[1].output[0].text",
      /must be a string, not an object/,
    ],
    [
      "function_call_output call_id as a number",
      item({ type: "function_call_output", call_id: 7, output: "ok" }),
      "input[1].call_id",
      /must be a string, not a number/,
    ],
    // tool_choice
    [
      "allowed_tools whose tools is a string",
      { model: M, input: "x", tools, tool_choice: { type: "allowed_tools", tools: "abc" } },
      "tool_choice.tools",
      /must be a list of tools, not a string/,
    ],
    [
      "allowed_tools whose tools hold null",
      { model: M, input: "x", tools, tool_choice: { type: "allowed_tools", tools: [null] } },
      "tool_choice.tools[0]",
      /must be an object.*not null/,
    ],
    [
      "allowed_tools with a tool without a name",
      { model: M, input: "x", tools, tool_choice: { type: "allowed_tools", tools: [{ type: "function" }] } },
      "tool_choice.tools[0].name",
      /missing/,
    ],
    [
      "allowed_tools whose mode is a number",
      {
        model: M,
        input: "x",
        tools,
        tool_choice: { type: "allowed_tools", mode: 1, tools: [{ type: "function", name: "f" }] },
      },
      "tool_choice.mode",
      /not a number/,
    ],
    [
      "a function tool_choice whose name is an object",
      { model: M, input: "x", tools, tool_choice: { type: "function", name: { a: 1 } } },
      "tool_choice.name",
      /must be a non-empty string, not an object/,
    ],
    [
      "a tool_choice that is a number",
      { model: M, input: "x", tools, tool_choice: 5 },
      "tool_choice",
      /must be an object with a `type`, not a number/,
    ],
    [
      "a tool_choice without a type",
      { model: M, input: "x", tools, tool_choice: { name: "f" } },
      "tool_choice.type",
      /missing/,
    ],
    // tools
    [
      "a function tool whose name is an object",
      { model: M, input: "x", tools: [{ type: "function", name: { a: 1 } }] },
      "tools[0].name",
      /must be a non-empty string, not an object/,
    ],
    [
      "a custom tool whose name is a list",
      { model: M, input: "x", tools: [{ type: "custom", name: ["p"] }] },
      "tools[0].name",
      /not an array/,
    ],
    [
      "a function tool whose parameters is a string",
      { model: M, input: "x", tools: [{ type: "function", name: "f", parameters: "abc" }] },
      "tools[0].parameters",
      /must be an object, not a string/,
    ],
    [
      "a function tool whose description is an object",
      { model: M, input: "x", tools: [{ type: "function", name: "f", description: { a: 1 } }] },
      "tools[0].description",
      /must be a string/,
    ],
    [
      "a function tool whose strict is a string",
      { model: M, input: "x", tools: [{ type: "function", name: "f", strict: "yes" }] },
      "tools[0].strict",
      /must be a boolean, not a string/,
    ],
    [
      "a custom tool whose grammar syntax is an object",
      {
        model: M,
        input: "x",
        tools: [
          { type: "custom", name: "p", format: { type: "grammar", syntax: { a: 1 }, definition: "s" } },
        ],
      },
      "tools[0].format.syntax",
      /must be a string, not an object/,
    ],
    [
      "a custom tool whose format is a number",
      { model: M, input: "x", tools: [{ type: "custom", name: "p", format: 5 }] },
      "tools[0].format",
      /must be an object, not a number/,
    ],
    [
      "parallel_tool_calls as a string",
      { model: M, input: "x", tools, parallel_tool_calls: "yes" },
      "parallel_tool_calls",
      /must be a boolean/,
    ],
    // other fields the translation reads
    ["text as a number", { model: M, input: "x", text: 5 }, "text", /must be an object, not a number/],
    [
      "text.verbosity as a number",
      { model: M, input: "x", text: { verbosity: 5 } },
      "text.verbosity",
      /string/,
    ],
    [
      "text.format as a string",
      { model: M, input: "x", text: { format: "json" } },
      "text.format",
      /must be an object, not a string/,
    ],
    [
      "a json_schema format whose name is an object",
      { model: M, input: "x", text: { format: { type: "json_schema", name: { a: 1 }, schema: {} } } },
      "text.format.name",
      /must be a string/,
    ],
    [
      "a json_schema format whose schema is a string",
      { model: M, input: "x", text: { format: { type: "json_schema", name: "r", schema: "abc" } } },
      "text.format.schema",
      /must be an object, not a string/,
    ],
    ["reasoning as a string", { model: M, input: "x", reasoning: "high" }, "reasoning", /must be an object/],
    [
      "reasoning.effort as a number",
      { model: M, input: "x", reasoning: { effort: 5 } },
      "reasoning.effort",
      /must be a string/,
    ],
    [
      "prompt_cache_key as an object",
      { model: M, input: "x", prompt_cache_key: { a: 1 } },
      "prompt_cache_key",
      /must be a string, not an object/,
    ],
    [
      "service_tier as a number",
      { model: M, input: "x", service_tier: 5 },
      "service_tier",
      /must be a string/,
    ],
    ["user as an object", { model: M, input: "x", user: { a: 1 } }, "user", /must be a string/],
    [
      "safety_identifier as a number",
      { model: M, input: "x", safety_identifier: 5 },
      "safety_identifier",
      /must be a string/,
    ],
  ];

  it.each(cases)("%s → 400 naming the field", async (_name, body, param, message) => {
    await expectRejected(body, param, message);
  });

  it("a null output part is a 400 naming it; the same output with text parts still goes through", async () => {
    await expectRejected(
      item({ type: "function_call_output", call_id: "a", output: [{ type: "input_text", text: "x" }, null] }),
      "input[1].output[1]",
      /must be an object/,
    );
    const ok = await post(
      item({
        type: "function_call_output",
        call_id: "a",
        output: [
          { type: "input_text", text: "ship" },
          { type: "input_image", image_url: "https://example.com/a.png" },
          { type: "input_text", text: "ped" },
        ],
      }),
    );
    expect(ok.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.messages.slice(-2)).toEqual([
      { role: "tool", tool_call_id: "a", content: "shipped" },
      // The image the tool returned follows in a user message (a tool message holds only text).
      { role: "user", content: [{ type: "image_url", image_url: { url: "https://example.com/a.png" } }] },
    ]);
  });

  it("function_call arguments must be text: an object is a 400, the same call with JSON text goes through", async () => {
    await expectRejected(
      { ...call({ arguments: { q: 1 } }), tools },
      "input[1].arguments",
      /must be a string/,
    );
    const ok = await post({ ...call({ arguments: '{"q":1}' }), tools });
    expect(ok.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.messages.at(-1)).toMatchObject({
      role: "assistant",
      tool_calls: [{ id: "c1", function: { name: "f", arguments: '{"q":1}' } }],
    });
  });

  it("a stream request with a null content part is a plain 400 JSON error, before any event", async () => {
    const before = sent();
    const res = await fetch(`${proxy.baseURL}/responses`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ ...message([null]), stream: true }),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(((await res.json()) as any).error).toMatchObject({
      code: "invalid_value",
      param: "input[0].content[0]",
    });
    expect(sent()).toBe(before);
  });
});
