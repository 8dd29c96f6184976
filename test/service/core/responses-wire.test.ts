import { accumulateResponse } from "openai/lib/responses/ResponseAccumulator";
import type { Response, ResponseStreamEvent } from "openai/resources/responses/responses";
import { describe, expect, it } from "vitest";
import { createResponseEventStream } from "../../../service/lib/openai-responses";
import type { ChatCompletionChunk } from "../../../service/types";

/** Our Responses events for these chunks, folded by the openai SDK's own accumulator. */
function assemble(chunks: ChatCompletionChunk[]): { response: Response; types: string[] } {
  const stream = createResponseEventStream("gpt-x");
  const frames = [...chunks.flatMap((c) => stream.push(c)), ...stream.end()];
  const events = frames.map((f) => JSON.parse(f.slice(f.indexOf("data: ") + 6)) as ResponseStreamEvent);
  let snapshot: Response | undefined;
  for (const e of events) snapshot = accumulateResponse(e, snapshot);
  expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
  return { response: snapshot!, types: events.map((e) => e.type) };
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
    const empty = assemble([]);
    expect(empty.types).toEqual(["response.created", "response.in_progress", "response.completed"]);
    expect(empty.response.output).toEqual([]);
  });
});
