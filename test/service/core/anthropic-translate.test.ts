import { describe, expect, it } from "vitest";
import {
  createStreamTranslator,
  fromAnthropicMessage,
  toAnthropicRequest,
} from "../../../service/providers/anthropic-translate";

describe("Anthropic translation details", () => {
  it("a stream's tool input arrives as argument deltas; cache writes count as prompt tokens", () => {
    const t = createStreamTranslator();
    const events = [
      {
        type: "message_start",
        message: { id: "msg_1", model: "m", usage: { input_tokens: 4, cache_creation_input_tokens: 6 } },
      },
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "t1", name: "lookup", input: {} },
      },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '{"a":' } },
      { type: "ping" },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "1}" } },
      { type: "content_block_stop", index: 0 },
      { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 5 } },
      { type: "message_stop" },
    ];
    const chunks = events.flatMap((e) => t.push(e));
    const calls = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    expect(calls[0]).toMatchObject({ index: 0, id: "t1", type: "function", function: { name: "lookup" } });
    expect(calls.map((c) => c.function?.arguments ?? "").join("")).toBe('{"a":1}');
    expect(chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean)).toEqual(["tool_calls"]);
    expect(chunks.at(-1)).toMatchObject({
      id: "msg_1",
      choices: [],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    });
  });

  it("response_format and reasoning_effort become output_config; temperature and top_p are dropped", () => {
    const body = toAnthropicRequest(
      {
        model: "m",
        messages: [{ role: "user", content: "x" }],
        temperature: 0.5,
        top_p: 0.9,
        reasoning_effort: "minimal",
        response_format: { type: "json_schema", json_schema: { name: "r", schema: { type: "object" } } },
      },
      100,
    );
    expect(body.output_config).toEqual({
      format: { type: "json_schema", schema: { type: "object", additionalProperties: false } },
      effort: "low",
    });
    expect(body).not.toHaveProperty("temperature");
    expect(body).not.toHaveProperty("top_p");
  });

  it("structured outputs: every object of the schema closed, as Anthropic requires; json_object left to the prompt", () => {
    const schema = {
      type: "object",
      properties: {
        items: { type: "array", items: { type: "object", properties: { id: { type: "string" } } } },
        kind: { anyOf: [{ type: "object", properties: {} }, { type: "null" }] },
        // A property named like a keyword, and literal values, are data, not schemas.
        properties: { type: "string", enum: [{ type: "object" }] },
      },
      $defs: { node: { type: "object", properties: { next: { $ref: "#/$defs/node" } } } },
      required: ["items"],
    };
    const copy = structuredClone(schema);
    const body = toAnthropicRequest(
      {
        model: "m",
        messages: [{ role: "user", content: "x" }],
        response_format: { type: "json_schema", json_schema: { name: "r", schema } },
      },
      100,
    );
    expect(body.output_config).toEqual({
      format: {
        type: "json_schema",
        schema: {
          type: "object",
          additionalProperties: false,
          properties: {
            items: {
              type: "array",
              items: { type: "object", additionalProperties: false, properties: { id: { type: "string" } } },
            },
            kind: {
              anyOf: [{ type: "object", properties: {}, additionalProperties: false }, { type: "null" }],
            },
            properties: { type: "string", enum: [{ type: "object" }] },
          },
          $defs: {
            node: {
              type: "object",
              additionalProperties: false,
              properties: { next: { $ref: "#/$defs/node" } },
            },
          },
          required: ["items"],
        },
      },
    });
    // The client's schema is not changed (it is also the cache key's and the usage's).
    expect(schema).toEqual(copy);
    const jsonMode = toAnthropicRequest(
      {
        model: "m",
        messages: [{ role: "user", content: "Answer in JSON." }],
        response_format: { type: "json_object" },
      },
      100,
    );
    expect(jsonMode).not.toHaveProperty("output_config");
  });

  it("message_delta's null usage fields keep the counts from message_start; a tool without input gets {}", () => {
    const t = createStreamTranslator();
    const chunks = [
      {
        type: "message_start",
        message: { id: "m", model: "m", usage: { input_tokens: 10, cache_read_input_tokens: 100 } },
      },
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "t", name: "now", input: {} },
      },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "" } },
      { type: "content_block_stop", index: 0 },
      {
        type: "message_delta",
        delta: { stop_reason: "tool_use" },
        usage: {
          input_tokens: null,
          cache_creation_input_tokens: null,
          cache_read_input_tokens: null,
          output_tokens: 42,
        },
      },
      { type: "message_stop" },
    ].flatMap((e) => t.push(e));
    const args = chunks
      .flatMap((c) => c.choices[0]?.delta.tool_calls ?? [])
      .map((c) => c.function?.arguments ?? "");
    expect(args.join("")).toBe("{}");
    expect(chunks.at(-1)!.usage).toEqual({
      prompt_tokens: 110,
      completion_tokens: 42,
      total_tokens: 152,
      prompt_tokens_details: { cached_tokens: 100, cache_write_tokens: 0 },
    });
  });

  it("a stream's 1-hour cache writes (message_start's cache_creation) survive message_delta's nulls", () => {
    const t = createStreamTranslator();
    const chunks = [
      {
        type: "message_start",
        message: {
          id: "m",
          model: "m",
          usage: {
            input_tokens: 10,
            cache_creation_input_tokens: 300,
            cache_creation: { ephemeral_5m_input_tokens: 100, ephemeral_1h_input_tokens: 200 },
          },
        },
      },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "ok" } },
      { type: "content_block_stop", index: 0 },
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn" },
        usage: { input_tokens: null, cache_creation_input_tokens: null, output_tokens: 5 },
      },
      { type: "message_stop" },
    ].flatMap((e) => t.push(e));
    expect(chunks.at(-1)!.usage).toEqual({
      prompt_tokens: 310,
      completion_tokens: 5,
      total_tokens: 315,
      prompt_tokens_details: { cached_tokens: 0, cache_write_tokens: 300, cache_write_1h_tokens: 200 },
    });
  });

  it("no tool_choice without tools, none stays plain none, empty text and empty turns are left out", () => {
    const user = { role: "user", content: "x" };
    expect(
      toAnthropicRequest({ model: "m", messages: [user], parallel_tool_calls: false }, 9),
    ).not.toHaveProperty("tool_choice");
    const tools = [{ type: "function", function: { name: "f", parameters: { type: "object" } } }];
    expect(
      toAnthropicRequest(
        { model: "m", messages: [user], tools, tool_choice: "none", parallel_tool_calls: false },
        9,
      ).tool_choice,
    ).toEqual({ type: "none" });
    const body = toAnthropicRequest(
      {
        model: "m",
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "" },
              { type: "text", text: "hi" },
            ],
          },
          { role: "assistant", content: "" },
          { role: "user", content: "again" },
        ],
      },
      9,
    );
    expect(body.messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "hi" },
          { type: "text", text: "again" },
        ],
      },
    ]);
  });

  it("max_tokens: max_completion_tokens first, then max_tokens, then the provider default", () => {
    const m = (extra: object) =>
      toAnthropicRequest({ model: "m", messages: [{ role: "user", content: "x" }], ...extra }, 321)
        .max_tokens;
    expect(m({})).toBe(321);
    expect(m({ max_tokens: 20 })).toBe(20);
    expect(m({ max_tokens: 20, max_completion_tokens: 30 })).toBe(30);
  });

  it("stop reasons map to OpenAI finish reasons; a refusal is content_filter", () => {
    const finish = (stop_reason: string) =>
      fromAnthropicMessage({ id: "i", model: "m", content: [{ type: "text", text: "t" }], stop_reason })
        .choices[0].finish_reason;
    expect(["end_turn", "stop_sequence", "max_tokens", "tool_use", "refusal"].map(finish)).toEqual([
      "stop",
      "stop",
      "length",
      "tool_calls",
      "content_filter",
    ]);
  });

  it("unsupported parts and roles are 400s naming the field", () => {
    const attempt = (messages: unknown[]) => () => toAnthropicRequest({ model: "m", messages }, 10);
    expect(attempt([{ role: "user", content: [{ type: "input_audio", input_audio: {} }] }])).toThrow(
      expect.objectContaining({ status: 400, param: "messages[0].content[0]" }),
    );
    expect(attempt([{ role: "function", name: "f", content: "x" }])).toThrow(
      expect.objectContaining({ param: "messages[0].role" }),
    );
    expect(
      attempt([
        {
          role: "assistant",
          tool_calls: [{ id: "1", type: "function", function: { name: "f", arguments: "{" } }],
        },
      ]),
    ).toThrow(expect.objectContaining({ param: "messages[0].tool_calls[0]" }));
  });
});
