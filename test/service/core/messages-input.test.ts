import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTwoProviderProxy, type FakeAnthropic } from "../../helpers/fake-anthropic";
import type { FakeUpstream } from "../../helpers/fake-upstream";
import type { TestProxy } from "../../helpers/proxy";

/**
 * POST /v1/messages and /v1/messages/count_tokens with a field of the wrong type (null or a number where a block
 * belongs, an object where text belongs, …): a 400 in Anthropic's error shape whose message names the field and what
 * it must be — not a 500 from a TypeError, and not "[object Object]" sent upstream as text. Nothing reaches either
 * upstream.
 */
describe("POST /v1/messages, /v1/messages/count_tokens: a wrong-typed field is a 400 naming it, nothing is sent", () => {
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
  const tools = [{ name: "f", input_schema: { type: "object" } }];
  const user = (content: unknown, model = M) => ({
    model,
    max_tokens: 50,
    messages: [{ role: "user", content }],
  });
  const assistant = (content: unknown) => ({
    model: M,
    max_tokens: 50,
    messages: [
      { role: "user", content: "hi" },
      { role: "assistant", content },
    ],
  });
  const toolResult = (fields: Record<string, unknown>) =>
    user([{ type: "tool_result", tool_use_id: "a", content: "ok", ...fields }]);
  const image = (source: unknown) => user([{ type: "image", source }]);
  const toolUse = (fields: Record<string, unknown>) =>
    assistant([{ type: "tool_use", id: "t1", name: "f", input: {}, ...fields }]);
  const withTools = (fields: Record<string, unknown>) => ({ ...user("hi"), tools, ...fields });

  async function post(path: string, body: unknown): Promise<{ status: number; body: any }> {
    const res = await fetch(`${proxy.url}${path}`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": "application/json", "anthropic-version": "2023-06-01" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  }

  const sent = () => upstream.requests.length + claude.requests.length;

  async function expectRejected(path: string, body: unknown, field: string, message: RegExp): Promise<void> {
    const before = sent();
    const res = await post(path, body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
    expect(res.body.error.message).toContain(field);
    expect(res.body.error.message).toMatch(message);
    expect(res.body.error.message).not.toContain("undefined");
    expect(sent()).toBe(before);
  }

  const cases: Array<[string, unknown, string, RegExp]> = [
    // tool_result
    [
      "tool_result content [null]",
      toolResult({ content: [null] }),
      "messages[0].content[0].content[0]",
      /must be an object with a `type`.*not null/,
    ],
    [
      "tool_result content [5]",
      toolResult({ content: [5] }),
      "messages[0].content[0].content[0]",
      /must be an object with a `type`.*not a number/,
    ],
    [
      "tool_result content a number",
      toolResult({ content: 5 }),
      "messages[0].content[0].content",
      /must be a string or a list of content blocks, not a number/,
    ],
    [
      "a tool_result text block whose text is an object",
      toolResult({ content: [{ type: "text", text: { a: 1 } }] }),
      "messages[0].content[0].content[0].text",
      /must be a string, not an object/,
    ],
    [
      "a tool_result image after text whose media_type is an object",
      toolResult({
        content: [
          { type: "text", text: "the screen" },
          { type: "image", source: { type: "base64", media_type: { a: 1 }, data: "AAAA" } },
        ],
      }),
      "messages[0].content[0].content[1].source.media_type",
      /must be a string such as `image\/png`, not an object/,
    ],
    [
      "a text block after an image in a tool_result, named at its own index",
      toolResult({
        content: [
          { type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } },
          { type: "text", text: 7 },
        ],
      }),
      "messages[0].content[0].content[1].text",
      /must be a string, not a number/,
    ],
    [
      "tool_use_id as an object",
      toolResult({ tool_use_id: { a: 1 } }),
      "messages[0].content[0].tool_use_id",
      /must be a string, not an object/,
    ],
    [
      "is_error as a string",
      toolResult({ is_error: "yes" }),
      "messages[0].content[0].is_error",
      /must be a boolean, not a string/,
    ],
    // user blocks
    [
      "a text block whose text is an object",
      user([{ type: "text", text: { a: 1 } }]),
      "messages[0].content[0].text",
      /must be a string, not an object/,
    ],
    [
      "a text block whose text is an object, to an Anthropic model",
      user([{ type: "text", text: { a: 1 } }], CLAUDE),
      "messages[0].content[0].text",
      /must be a string, not an object/,
    ],
    [
      "a text block whose text is a number",
      user([{ type: "text", text: 5 }]),
      "messages[0].content[0].text",
      /not a number/,
    ],
    ["an image whose source is null", image(null), "messages[0].content[0].source", /must be an object/],
    [
      "a base64 image whose media_type is an object",
      image({ type: "base64", media_type: { a: 1 }, data: "AAAA" }),
      "messages[0].content[0].source.media_type",
      /not an object/,
    ],
    [
      "a base64 image whose data is a list",
      image({ type: "base64", media_type: "image/png", data: ["AAAA"] }),
      "messages[0].content[0].source.data",
      /not an array/,
    ],
    [
      "a url image whose url is a number",
      image({ type: "url", url: 5 }),
      "messages[0].content[0].source.url",
      /must be a string, not a number/,
    ],
    [
      "a content document holding null",
      user([{ type: "document", source: { type: "content", content: [null] } }]),
      "messages[0].content[0].source.content[0]",
      /must be an object with a `type`.*not null/,
    ],
    [
      "a text document whose data is a number",
      user([{ type: "document", source: { type: "text", media_type: "text/plain", data: 5 } }]),
      "messages[0].content[0].source.data",
      /must be a string, not a number/,
    ],
    [
      "a document whose source is a number",
      user([{ type: "document", source: 5 }]),
      "messages[0].content[0].source",
      /must be an object with a `type`, not a number/,
    ],
    [
      "a document whose title is an object",
      user([{ type: "document", title: { a: 1 }, source: { type: "text", data: "d" } }]),
      "messages[0].content[0].title",
      /must be a string, not an object/,
    ],
    // assistant blocks
    [
      "an assistant text block whose text is an object",
      assistant([{ type: "text", text: { a: 1 } }]),
      "messages[1].content[0].text",
      /must be a string, not an object/,
    ],
    ["a tool_use id as an object", toolUse({ id: { a: 1 } }), "messages[1].content[0].id", /not an object/],
    ["a tool_use name as a list", toolUse({ name: ["f"] }), "messages[1].content[0].name", /not an array/],
    [
      "a tool_use input as a string",
      toolUse({ input: "abc" }),
      "messages[1].content[0].input",
      /must be an object, not a string/,
    ],
    // system
    [
      "a system text block whose text is a number",
      { ...user("hi"), system: [{ type: "text", text: 5 }] },
      "system[0].text",
      /must be a string, not a number/,
    ],
    [
      "a system-role message whose text is a list",
      { model: M, max_tokens: 50, messages: [{ role: "system", content: [{ type: "text", text: [1] }] }] },
      "messages[0].content[0].text",
      /not an array/,
    ],
    // tools and tool_choice
    [
      "a tool whose input_schema is a string",
      { ...user("hi"), tools: [{ name: "f", input_schema: "abc" }] },
      "tools[0].input_schema",
      /must be an object, not a string/,
    ],
    [
      "a tool whose type is an object",
      { ...user("hi"), tools: [{ name: "f", type: { a: 1 }, input_schema: { type: "object" } }] },
      "tools[0].type",
      /must be a string, not an object/,
    ],
    [
      "a tool whose description is a number",
      { ...user("hi"), tools: [{ name: "f", description: 5, input_schema: { type: "object" } }] },
      "tools[0].description",
      /must be a string/,
    ],
    [
      "a tool_choice that is a string",
      withTools({ tool_choice: "auto" }),
      "tool_choice",
      /must be an object with a `type`.*not a string/,
    ],
    [
      "a tool tool_choice whose name is an object",
      withTools({ tool_choice: { type: "tool", name: { a: 1 } } }),
      "tool_choice.name",
      /must be a non-empty string.*not an object/,
    ],
    [
      "a tool tool_choice without a name",
      withTools({ tool_choice: { type: "tool" } }),
      "tool_choice.name",
      /missing/,
    ],
    [
      "disable_parallel_tool_use as a string",
      withTools({ tool_choice: { type: "any", disable_parallel_tool_use: "yes" } }),
      "tool_choice.disable_parallel_tool_use",
      /must be a boolean/,
    ],
    // other fields the translation reads
    ["metadata as a string", { ...user("hi"), metadata: "u-1" }, "metadata", /must be an object/],
    [
      "metadata.user_id as a number",
      { ...user("hi"), metadata: { user_id: 5 } },
      "metadata.user_id",
      /must be a string, not a number/,
    ],
    [
      "output_config.format.schema as a string",
      { ...user("hi"), output_config: { format: { type: "json_schema", schema: "abc" } } },
      "output_config.format.schema",
      /must be an object, not a string/,
    ],
  ];

  it.each(cases)("/v1/messages: %s → 400 naming the field", async (_name, body, field, message) => {
    await expectRejected("/v1/messages", body, field, message);
  });

  it.each(cases)(
    "/v1/messages/count_tokens: %s → 400 naming the field",
    async (_name, body, field, message) => {
      await expectRejected("/v1/messages/count_tokens", body, field, message);
    },
  );

  it("a tool_result holding [null] is a 400; the same result with text and an image still goes through", async () => {
    await expectRejected(
      "/v1/messages",
      toolResult({ content: [{ type: "text", text: "the screen" }, null] }),
      "messages[0].content[0].content[1]",
      /must be an object with a `type`/,
    );
    const ok = await post(
      "/v1/messages",
      toolResult({
        content: [
          { type: "text", text: "the screen" },
          { type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } },
        ],
      }),
    );
    expect(ok.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.messages).toEqual([
      { role: "tool", tool_call_id: "a", content: "the screen" },
      { role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
    ]);
  });
});
