import { accumulateResponse } from "openai/lib/responses/ResponseAccumulator";
import type { Response, ResponseStreamEvent } from "openai/resources/responses/responses";
import { describe, expect, it } from "vitest";
import {
  chatToResponse,
  createResponseEventStream,
  responsesToChat,
} from "../../../service/lib/openai-responses";
import { toProxyError, UpstreamError } from "../../../service/errors";
import type { ChatCompletionChunk } from "../../../service/types";

/** Our Responses events for these chunks, folded by the openai SDK's own accumulator. */
function assemble(
  chunks: ChatCompletionChunk[],
  custom: Set<string> = new Set(),
): { response: Response; types: string[]; events: ResponseStreamEvent[] } {
  const stream = createResponseEventStream("gpt-x", custom);
  const frames = [...chunks.flatMap((c) => stream.push(c)), ...stream.end()];
  const events = frames.map((f) => JSON.parse(f.slice(f.indexOf("data: ") + 6)) as ResponseStreamEvent);
  let snapshot: Response | undefined;
  for (const e of events) snapshot = accumulateResponse(e, snapshot);
  expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
  return { response: snapshot!, types: events.map((e) => e.type), events };
}

const base = { id: "c1", object: "chat.completion.chunk" as const, created: 1, model: "gpt" };
const ch = (delta: ChatCompletionChunk["choices"][number]["delta"], finish: string | null = null) => ({
  ...base,
  choices: [{ index: 0, delta, finish_reason: finish }],
});

describe("chat chunks → Responses events, as the openai SDK accumulates them", () => {
  it("text, then two parallel calls with interleaved arguments: three output items, usage, completed", () => {
    const { response, types } = assemble([
      ch({ content: "Checking." }),
      ch({
        tool_calls: [
          { index: 0, id: "a", type: "function", function: { name: "f", arguments: "" } },
          { index: 1, id: "b", type: "function", function: { name: "g", arguments: "" } },
        ],
      }),
      ch({ tool_calls: [{ index: 0, function: { arguments: '{"x":' } }] }),
      ch({ tool_calls: [{ index: 1, function: { arguments: '{"y":2}' } }] }),
      ch({ tool_calls: [{ index: 0, function: { arguments: "1}" } }] }),
      ch({}, "tool_calls"),
      { ...base, choices: [], usage: { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 } },
    ]);
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(response.status).toBe("completed");
    expect(response.output.map((o) => o.type)).toEqual(["message", "function_call", "function_call"]);
    expect(response.output[1]).toMatchObject({
      call_id: "a",
      name: "f",
      arguments: '{"x":1}',
      status: "completed",
    });
    expect(response.output[2]).toMatchObject({ call_id: "b", name: "g", arguments: '{"y":2}' });
    expect(response.usage).toMatchObject({ input_tokens: 20, output_tokens: 5, total_tokens: 25 });
  });

  it("a length stop ends incomplete with max_output_tokens; an empty stream is still a whole response", () => {
    const cut = assemble([ch({ content: "abc" }), ch({}, "length")]);
    expect(cut.types.at(-1)).toBe("response.incomplete");
    expect(cut.response.incomplete_details).toEqual({ reason: "max_output_tokens" });
    // The item the answer was cut in is incomplete too, in the stream's final response and in a JSON answer.
    expect(cut.response.output[0]).toMatchObject({ type: "message", status: "incomplete" });
    const json = chatToResponse(
      {
        id: "c",
        object: "chat.completion",
        created: 1,
        model: "m",
        choices: [{ index: 0, message: { role: "assistant", content: "abc" }, finish_reason: "length" }],
      },
      "m",
    ) as { status: string; output: Array<{ status: string }> };
    expect(json.status).toBe("incomplete");
    expect(json.output[0].status).toBe("incomplete");
    const empty = assemble([]);
    expect(empty.types).toEqual(["response.created", "response.in_progress", "response.completed"]);
    expect(empty.response.output).toEqual([]);
  });

  it("a custom tool's call comes back as a custom_tool_call with its raw input; usage details carry over", () => {
    const { response, types } = assemble(
      [
        ch({
          tool_calls: [
            { index: 0, id: "p1", type: "function", function: { name: "apply_patch", arguments: '{"inp' } },
          ],
        }),
        ch({ tool_calls: [{ index: 0, function: { arguments: 'ut":"*** Begin Patch\\n*** End Patch"}' } }] }),
        ch({}, "tool_calls"),
        {
          ...base,
          choices: [],
          usage: {
            prompt_tokens: 50,
            completion_tokens: 9,
            total_tokens: 59,
            prompt_tokens_details: { cached_tokens: 32 },
            completion_tokens_details: { reasoning_tokens: 4 },
          },
        },
      ],
      new Set(["apply_patch"]),
    );
    expect(response.output[0]).toMatchObject({
      type: "custom_tool_call",
      call_id: "p1",
      name: "apply_patch",
      input: "*** Begin Patch\n*** End Patch",
    });
    expect(types).toContain("response.custom_tool_call_input.done");
    expect(response.usage).toMatchObject({
      input_tokens_details: { cached_tokens: 32 },
      output_tokens_details: { reasoning_tokens: 4 },
    });
  });

  it("a refusal comes back as text, in streams and in JSON", () => {
    const { response } = assemble([ch({ refusal: "I can't help with that." }), ch({}, "stop")]);
    expect(response.output_text).toBe("I can't help with that.");
    const json = chatToResponse(
      {
        id: "c",
        object: "chat.completion",
        created: 1,
        model: "m",
        choices: [
          { index: 0, message: { role: "assistant", content: null, refusal: "No." }, finish_reason: "stop" },
        ],
      },
      "m",
    );
    expect((json.output as any[])[0].content[0].text).toBe("No.");
  });

  it("two calls that both say index 0 but have different ids stay two calls", () => {
    const { response } = assemble([
      ch({
        tool_calls: [{ index: 0, id: "a", type: "function", function: { name: "f", arguments: '{"x":1}' } }],
      }),
      ch({
        tool_calls: [{ index: 0, id: "b", type: "function", function: { name: "g", arguments: '{"y":2}' } }],
      }),
      ch({}, "tool_calls"),
    ]);
    expect(response.output.map((o) => (o as { arguments: string }).arguments)).toEqual([
      '{"x":1}',
      '{"y":2}',
    ]);
  });

  it("a failure mid-stream is an error event and response.failed, numbered after what came before", () => {
    const stream = createResponseEventStream("gpt-x");
    const before = stream.push(ch({ content: "partial" }));
    const failed = stream.error(
      toProxyError(new UpstreamError("The upstream stream failed.", "upstream_stream_error")),
    );
    const events = [
      ...before,
      ...failed
        .split("\n\n")
        .filter(Boolean)
        .map((f) => f + "\n\n"),
    ].map((f) => JSON.parse(f.slice(f.indexOf("data: ") + 6)));
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.at(-2)).toMatchObject({ type: "error", code: "upstream_stream_error" });
    expect(events.at(-1)).toMatchObject({
      type: "response.failed",
      response: { status: "failed", error: { code: "server_error", message: "The upstream stream failed." } },
    });
  });
});

describe("Responses request → chat request: what clients like Codex send", () => {
  it("several input_text parts of one message are joined by line breaks, never run together", () => {
    const chat = responsesToChat({
      model: "m",
      input: [
        {
          type: "message",
          role: "user",
          content: [
            { type: "input_text", text: "<env>cwd=/a</env>" },
            { type: "input_text", text: "Fix the bug." },
          ],
        },
      ],
    } as never);
    expect(chat.messages).toEqual([{ role: "user", content: "<env>cwd=/a</env>\nFix the bug." }]);
  });

  it("custom tools, custom calls and outputs; assistant text after a call joins that turn; no tool fields without tools", () => {
    const chat = responsesToChat({
      model: "m",
      input: [
        { type: "message", role: "user", content: [{ type: "input_text", text: "fix it" }] },
        { type: "reasoning", id: "r1", encrypted_content: "..." },
        { type: "custom_tool_call", call_id: "p1", name: "apply_patch", input: "*** Begin Patch" },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "Applying." }] },
        { type: "custom_tool_call_output", call_id: "p1", output: "Done" },
      ],
      tools: [
        {
          type: "custom",
          name: "apply_patch",
          description: "Edit files",
          format: { type: "grammar", syntax: "lark", definition: "start: /.+/" },
        },
      ],
      tool_choice: "auto",
      parallel_tool_calls: false,
      text: { verbosity: "low" },
      prompt_cache_key: "conv-1",
    });
    expect(chat.messages).toEqual([
      { role: "user", content: "fix it" },
      {
        role: "assistant",
        content: "Applying.",
        tool_calls: [
          {
            id: "p1",
            type: "function",
            function: { name: "apply_patch", arguments: '{"input":"*** Begin Patch"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "p1", content: "Done" },
    ]);
    expect((chat.tools as any[])[0].function).toMatchObject({
      name: "apply_patch",
      parameters: { required: ["input"] },
    });
    expect((chat.tools as any[])[0].function.description).toContain("start: /.+/");
    expect(chat).toMatchObject({
      tool_choice: "auto",
      parallel_tool_calls: false,
      verbosity: "low",
      prompt_cache_key: "conv-1",
    });
    const bare = responsesToChat({
      model: "m",
      input: "hi",
      parallel_tool_calls: false,
      tool_choice: "auto",
    });
    expect(bare).not.toHaveProperty("parallel_tool_calls");
    expect(bare).not.toHaveProperty("tool_choice");
  });

  it("what the proxy cannot honour is a 400 naming it; what chat can carry is carried", () => {
    const attempt = (body: Record<string, unknown>) => () =>
      responsesToChat({ model: "m", ...body } as never);
    // A stored prompt template (with or without input), a tool-call cap, a file-store image.
    for (const [body, param] of [
      [{ prompt: { id: "pmpt_1", variables: { a: "b" } }, input: "x" }, "prompt"],
      [{ prompt: { id: "pmpt_1" } }, "prompt"],
      [{ input: "x", max_tool_calls: 2 }, "max_tool_calls"],
      [
        { input: [{ role: "user", content: [{ type: "input_image", file_id: "file-1" }] }] },
        "input[0].content[0]",
      ],
    ] as const)
      expect(attempt(body)).toThrow(
        expect.objectContaining({ status: 400, code: "unsupported_parameter", param }),
      );
    expect(attempt({ input: [{ role: "user", content: [{ type: "input_image", file_id: "f" }] }] })).toThrow(
      /file_id.*image_url/,
    );
    expect(attempt({})).toThrow(
      expect.objectContaining({ status: 400, code: "missing_required_parameter", param: "input" }),
    );
    const chat = responsesToChat({
      model: "m",
      include: ["message.output_text.logprobs"],
      top_logprobs: 3,
      text: {
        format: { type: "json_schema", name: "out", description: "The answer", schema: { type: "object" } },
      },
      input: [
        { role: "user", content: "look" },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "A" }] },
        { type: "function_call", call_id: "c1", name: "shot", arguments: "{}" },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "B" }] },
        {
          type: "function_call_output",
          call_id: "c1",
          output: [
            { type: "input_text", text: "the screen" },
            { type: "input_image", image_url: "data:image/png;base64,AAAA" },
          ],
        },
      ],
    } as never);
    expect(chat).toMatchObject({ logprobs: true, top_logprobs: 3 });
    expect(chat.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "out", description: "The answer", schema: { type: "object" } },
    });
    expect(chat.messages.slice(1)).toEqual([
      // The turn's two texts keep apart.
      {
        role: "assistant",
        content: "A\nB",
        tool_calls: [{ id: "c1", type: "function", function: { name: "shot", arguments: "{}" } }],
      },
      { role: "tool", tool_call_id: "c1", content: "the screen" },
      // The image the tool returned follows, where chat can carry it.
      { role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
    ]);
  });
});
