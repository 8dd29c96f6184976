import { Stream } from "@anthropic-ai/sdk/core/streaming";
import { MessageStream } from "@anthropic-ai/sdk/lib/MessageStream";
import type { Message } from "@anthropic-ai/sdk/resources/messages";
import { describe, expect, it } from "vitest";
import { chatToMessage, createMessageStream, messagesToChat } from "../../../service/lib/anthropic-messages";
import { createStreamTranslator, fromAnthropicMessage } from "../../../service/providers/anthropic-translate";
import type { ChatCompletionChunk } from "../../../service/types";

/** Our Messages event stream for these chunks, parsed and assembled by the Anthropic SDK's own stream code. */
async function assemble(
  chunks: ChatCompletionChunk[],
  promptEstimate = 0,
): Promise<{ message: Message; events: any[] }> {
  const stream = createMessageStream("claude-x", promptEstimate);
  const sse = [...chunks.flatMap((c) => stream.push(c)), ...stream.end()].join("");
  const events: any[] = [];
  for await (const e of Stream.fromSSEResponse(new Response(sse), new AbortController())) events.push(e);
  const lines = events.map((e) => JSON.stringify(e)).join("\n") + "\n";
  const body = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode(lines));
      c.close();
    },
  });
  const message = await MessageStream.fromReadableStream(body).finalMessage();
  return { message, events };
}

const base = { id: "c1", object: "chat.completion.chunk" as const, created: 1, model: "gpt" };
const ch = (
  delta: ChatCompletionChunk["choices"][number]["delta"],
  finish: string | null = null,
): ChatCompletionChunk => ({
  ...base,
  choices: [{ index: 0, delta, finish_reason: finish }],
});
const call = (index: number, fn: { name?: string; arguments?: string }, id?: string) => ({
  index,
  ...(id ? { id, type: "function" } : {}),
  function: fn,
});

describe("chat chunks → Messages events, as the Anthropic SDK assembles them", () => {
  it("parallel tool calls whose argument deltas interleave stay two whole tool_use blocks", async () => {
    const { message } = await assemble([
      ch({
        role: "assistant",
        tool_calls: [call(0, { name: "f", arguments: "" }, "a"), call(1, { name: "g", arguments: "" }, "b")],
      }),
      ch({ tool_calls: [call(0, { arguments: '{"x":' })] }),
      ch({ tool_calls: [call(1, { arguments: '{"y":2}' })] }),
      ch({ tool_calls: [call(0, { arguments: "1}" })] }),
      ch({}, "tool_calls"),
      { ...base, choices: [], usage: { prompt_tokens: 30, completion_tokens: 9, total_tokens: 39 } },
    ]);
    expect(message.content).toEqual([
      { type: "tool_use", id: "a", name: "f", input: { x: 1 } },
      { type: "tool_use", id: "b", name: "g", input: { y: 2 } },
    ]);
    expect(message.stop_reason).toBe("tool_use");
    expect(message.usage).toMatchObject({ input_tokens: 30, output_tokens: 9 });
  });

  it("blocks never overlap: each ends before the next starts, so the SDK's per-block events name the right block", async () => {
    // Text, two calls streamed one after the other (as OpenAI does), then text again; and a call whose deltas
    // interleave with a later one's (as some providers do).
    const cases: ChatCompletionChunk[][] = [
      [
        ch({ content: "Checking." }),
        ch({ tool_calls: [call(0, { name: "f", arguments: "" }, "A")] }),
        ch({ tool_calls: [call(0, { arguments: '{"x":1}' })] }),
        ch({ tool_calls: [call(1, { name: "g", arguments: "" }, "B")] }),
        ch({ tool_calls: [call(1, { arguments: '{"y":2}' })] }),
        ch({ content: "Done." }),
        ch({}, "tool_calls"),
      ],
      [
        ch({ tool_calls: [call(0, { name: "f", arguments: '{"x":' }, "A")] }),
        ch({ tool_calls: [call(1, { name: "g", arguments: '{"y":' }, "B")] }),
        ch({ tool_calls: [call(0, { arguments: "1}" })] }),
        ch({ content: "Done." }),
        ch({ tool_calls: [call(1, { arguments: "2}" })] }),
        ch({}, "tool_calls"),
      ],
    ];
    for (const chunks of cases) {
      const { events } = await assemble(chunks);
      const open: number[] = [];
      let last = -1;
      for (const e of events) {
        if (e.type === "content_block_start") {
          expect(open).toEqual([]);
          expect(e.index).toBe(last + 1);
          open.push(e.index);
          last = e.index;
        } else if (e.type === "content_block_delta") expect(open).toEqual([e.index]);
        else if (e.type === "content_block_stop") expect(open.pop()).toBe(e.index);
      }
      expect(open).toEqual([]);
      // The SDK's own helper: its contentBlock event must report each block once, in order.
      const sse = [
        ...(() => {
          const stream = createMessageStream("claude-x");
          return [...chunks.flatMap((c) => stream.push(c)), ...stream.end()];
        })(),
      ].join("");
      const lines: string[] = [];
      for await (const e of Stream.fromSSEResponse(new Response(sse), new AbortController()))
        lines.push(JSON.stringify(e));
      const reported: unknown[] = [];
      const body = new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(lines.join("\n") + "\n"));
          c.close();
        },
      });
      const sdk = MessageStream.fromReadableStream(body).on("contentBlock", (b) =>
        reported.push(b.type === "tool_use" ? [b.id, b.input] : b.type === "text" ? b.text : b.type),
      );
      const message = await sdk.finalMessage();
      expect(reported).toEqual(
        message.content.map((b) =>
          b.type === "tool_use" ? [b.id, b.input] : b.type === "text" ? b.text : b.type,
        ),
      );
    }
    const first = await assemble(cases[0]);
    expect(first.message.content).toEqual([
      { type: "text", text: "Checking." },
      { type: "tool_use", id: "A", name: "f", input: { x: 1 } },
      { type: "tool_use", id: "B", name: "g", input: { y: 2 } },
      { type: "text", text: "Done." },
    ]);
    const second = await assemble(cases[1]);
    expect(second.message.content).toEqual([
      { type: "tool_use", id: "A", name: "f", input: { x: 1 } },
      { type: "tool_use", id: "B", name: "g", input: { y: 2 } },
      { type: "text", text: "Done." },
    ]);
  });

  it("a refusal is stop_reason refusal, though OpenAI ends it with finish_reason stop (JSON and stream)", async () => {
    const completion = {
      id: "c1",
      object: "chat.completion" as const,
      created: 1,
      model: "gpt",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: null, refusal: "I can't help with that." },
          finish_reason: "stop",
        },
      ],
    };
    expect(chatToMessage(completion, "gpt")).toMatchObject({
      content: [{ type: "text", text: "I can't help with that." }],
      stop_reason: "refusal",
    });
    const { message } = await assemble([
      ch({ refusal: "I can't " }),
      ch({ refusal: "help." }),
      ch({}, "stop"),
    ]);
    expect(message).toMatchObject({
      content: [{ type: "text", text: "I can't help." }],
      stop_reason: "refusal",
    });
    // A plain answer still ends its turn.
    expect((await assemble([ch({ content: "Sure." }), ch({}, "stop")])).message.stop_reason).toBe("end_turn");
  });

  it("tool-call arguments nested deeper than a body may be become input {} (as invalid JSON does), serializable", () => {
    const deep = "[".repeat(50_000) + "]".repeat(50_000);
    const completion = {
      id: "c",
      object: "chat.completion",
      created: 1,
      model: "gpt",
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: null,
            tool_calls: [
              { id: "t1", type: "function", function: { name: "f", arguments: deep } },
              { id: "t2", type: "function", function: { name: "g", arguments: '{"a":[[1]]}' } },
            ],
          },
          finish_reason: "tool_calls",
        },
      ],
    } as never;
    const message = chatToMessage(completion, "gpt");
    expect(message.content).toEqual([
      { type: "tool_use", id: "t1", name: "f", input: {} },
      { type: "tool_use", id: "t2", name: "g", input: { a: [[1]] } },
    ]);
    expect(() => JSON.stringify(message)).not.toThrow();
  });

  it("Anthropic's pause_turn and model_context_window_exceeded survive the trip through chat (JSON and stream)", async () => {
    for (const reason of ["pause_turn", "model_context_window_exceeded", "end_turn", "max_tokens"]) {
      const json = fromAnthropicMessage({
        id: "msg_1",
        model: "claude-x",
        content: [{ type: "text", text: "partial" }],
        stop_reason: reason,
        usage: { input_tokens: 3, output_tokens: 1 },
      });
      expect(chatToMessage(json, "claude-x")).toMatchObject({ stop_reason: reason });
      const t = createStreamTranslator();
      const chunks = [
        {
          type: "message_start",
          message: { id: "msg_1", model: "claude-x", usage: { input_tokens: 3, output_tokens: 0 } },
        },
        { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
        { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "partial" } },
        { type: "content_block_stop", index: 0 },
        {
          type: "message_delta",
          delta: { stop_reason: reason, stop_sequence: null },
          usage: { output_tokens: 1 },
        },
        { type: "message_stop" },
      ].flatMap((e) => t.push(e));
      expect((await assemble(chunks)).message.stop_reason).toBe(reason);
    }
  });

  it("text, then a tool call, then more text: three blocks in order", async () => {
    const { message } = await assemble([
      ch({ content: "Let me check." }),
      ch({ tool_calls: [call(0, { name: "f", arguments: "{}" }, "a")] }),
      ch({ content: "Done." }),
      ch({}, "stop"),
    ]);
    expect(message.content.map((b) => b.type)).toEqual(["text", "tool_use", "text"]);
    expect(message.content[2]).toMatchObject({ text: "Done." });
  });

  it("an empty stream still starts and ends a message; message_start carries the prompt estimate", async () => {
    const empty = await assemble([]);
    expect(empty.message.content).toEqual([]);
    expect(empty.events.map((e) => e.type)).toEqual(["message_start", "message_delta", "message_stop"]);
    const estimated = await assemble([ch({ content: "hi" })], 42);
    expect(estimated.events[0].message.usage.input_tokens).toBe(42);
  });
});

describe("Messages request → chat request", () => {
  it("a block the proxy cannot translate is a 400 naming it, with the same code as on /v1/responses", () => {
    const attempt = () =>
      messagesToChat({
        model: "m",
        max_tokens: 5,
        messages: [
          { role: "user", content: [{ type: "search_result", source: "x", title: "t", content: [] }] },
        ],
      } as never);
    expect(attempt).toThrow(
      expect.objectContaining({
        status: 400,
        code: "unsupported_parameter",
        param: "messages[0].content[0]",
      }),
    );
  });

  it("a text document becomes text with its title and context; a PDF is a 400 saying why", () => {
    const chat = messagesToChat({
      model: "m",
      max_tokens: 5,
      messages: [
        {
          role: "user",
          content: [
            {
              type: "document",
              title: "Refund policy",
              context: "current as of 2026",
              source: { type: "text", media_type: "text/plain", data: "Refunds within 30 days." },
              citations: { enabled: true },
            },
            { type: "document", source: { type: "content", content: [{ type: "text", text: "Part two." }] } },
            { type: "text", text: "Summarise." },
          ],
        },
      ],
    } as never);
    expect(chat.messages).toEqual([
      {
        role: "user",
        content:
          "Document: Refund policy\nContext: current as of 2026\nRefunds within 30 days.\nPart two.\nSummarise.",
      },
    ]);
    const pdf = () =>
      messagesToChat({
        model: "m",
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
      } as never);
    expect(pdf).toThrow(
      expect.objectContaining({
        status: 400,
        code: "unsupported_parameter",
        param: "messages[0].content[0].source",
      }),
    );
    expect(pdf).toThrow(/PII scrub/);
    // Malformed document content is a 400, not a crash.
    for (const content of [42, {}, [null], [{ type: "image" }]]) {
      const bad = () =>
        messagesToChat({
          model: "m",
          max_tokens: 5,
          messages: [{ role: "user", content: [{ type: "document", source: { type: "content", content } }] }],
        } as never);
      expect(bad).toThrow(expect.objectContaining({ status: 400, code: "unsupported_parameter" }));
    }
  });

  it("images a tool returned follow the tool message in a user message; a system turn stays a system message", () => {
    const chat = messagesToChat({
      model: "m",
      max_tokens: 5,
      messages: [
        { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "screenshot", input: {} }] },
        {
          role: "user",
          content: [
            {
              type: "tool_result",
              tool_use_id: "t1",
              content: [
                { type: "text", text: "the screen" },
                { type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } },
              ],
            },
          ],
        },
        { role: "system", content: "Be careful." },
      ],
    });
    expect(chat.messages.slice(1)).toEqual([
      { role: "tool", tool_call_id: "t1", content: "the screen" },
      { role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
      { role: "system", content: "Be careful." },
    ]);
  });
});
