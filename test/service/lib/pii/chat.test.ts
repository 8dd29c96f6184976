import { describe, expect, it } from "vitest";
import {
  createChunkRestorer,
  type ChunkRestorer,
  createPiiEngine,
  restoreChatCompletion,
  restoreChunkList,
  scrubChatRequest,
  scrubEmbeddingInput,
} from "../../../../service/lib/pii";
import { walkChunks } from "../../../../service/lib/chunk-blocks";
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest } from "../../../../service/types";

const engine = createPiiEngine({ enabled: true, names: "gazetteer" });
const EMAIL = "maria.gonzalez@example.com";
const PHONE = "+1 415 555 0132";
const PH_RE = /<<PII_[A-Z_]+_[0-9a-f]{32}>>/g;

function request(): ChatCompletionRequest {
  return {
    model: "gpt-4o",
    messages: [
      { role: "system", content: `Escalations go to ${EMAIL}.` },
      { role: "developer", content: "Never reveal 203.0.113.9." },
      {
        role: "user",
        name: "maria_g",
        content: [
          { type: "text", text: `I am Maria Gonzalez, call ${PHONE}.` },
          { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
        ],
      },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_1",
            type: "function",
            function: {
              name: "lookup",
              arguments: JSON.stringify({ email: EMAIL, note: 'say "hi" to Maria Gonzalez', n: 3 }),
            },
          },
        ],
      },
      {
        role: "tool",
        tool_call_id: "call_1",
        content: `Found ${EMAIL} in Berlin, card 4532 5718 4225 5902.`,
      },
      { role: "assistant", content: "ok", function_call: { name: "legacy", arguments: `{"to":"${EMAIL}"}` } },
    ],
    tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }],
  };
}

describe("scrubChatRequest", () => {
  it("scrubs every text the provider sees and keeps the original body untouched", () => {
    const session = engine.newSession();
    const body = request();
    const before = JSON.stringify(body);
    const out = scrubChatRequest(body, session);
    expect(JSON.stringify(body)).toBe(before);
    const wire = JSON.stringify(out);
    for (const v of [EMAIL, "Maria Gonzalez", "415 555 0132", "203.0.113.9", "Berlin", "4532 5718 4225 5902"])
      expect(wire, v).not.toContain(v);
    // Image parts, tool definitions, ids and the (API-restricted) name field stay as they are.
    expect(out.messages[2]!.content).toContainEqual({
      type: "image_url",
      image_url: { url: "data:image/png;base64,AAAA" },
    });
    expect(out.messages[2]!.name).toBe("maria_g");
    expect(out.tools).toEqual(body.tools);
    expect(out.messages[3]!.tool_calls![0]!.id).toBe("call_1");
  });

  it("scrubs predicted output, custom tool-call input and reasoning in history, and restores them in answers", () => {
    const session = engine.newSession();
    const body: ChatCompletionRequest = {
      model: "m",
      prediction: { type: "content", content: `Dear Maria Gonzalez, write to ${EMAIL}.` },
      messages: [
        { role: "user", content: "hi" },
        {
          role: "assistant",
          content: null,
          reasoning_content: `The user is ${EMAIL}.`,
          tool_calls: [{ id: "c1", type: "custom", custom: { name: "shell", input: `mail ${EMAIL}` } }],
        },
      ],
    };
    const out = scrubChatRequest(body, session);
    const wire = JSON.stringify(out);
    expect(wire).not.toContain(EMAIL);
    expect(wire).not.toContain("Maria Gonzalez");
    expect((out.prediction as { type: string }).type).toBe("content");
    expect(out.messages[1]!.tool_calls![0]!.custom).toMatchObject({ name: "shell" });
    // Parts work for predictions too.
    const parts = scrubChatRequest(
      { model: "m", messages: [], prediction: { type: "content", content: [{ type: "text", text: EMAIL }] } },
      session,
    );
    expect(JSON.stringify(parts.prediction)).not.toContain(EMAIL);
    // An answer echoing the placeholders gets the values back, in every field.
    const [ph] = session.placeholders();
    const answer = restoreChatCompletion(
      {
        id: "x",
        object: "chat.completion",
        created: 1,
        model: "m",
        choices: [
          {
            index: 0,
            finish_reason: "tool_calls",
            message: {
              role: "assistant",
              content: null,
              reasoning_content: `mail ${ph}`,
              tool_calls: [{ id: "c2", type: "custom", custom: { name: "shell", input: `mail ${ph}` } }],
            },
          },
        ],
      },
      session,
    );
    expect(answer.choices[0]!.message.reasoning_content).toBe(`mail ${EMAIL}`);
    expect(answer.choices[0]!.message.tool_calls![0]!.custom).toEqual({
      name: "shell",
      input: `mail ${EMAIL}`,
    });
  });

  it("keeps tool-call arguments valid JSON with scrubbed string values", () => {
    const session = engine.newSession();
    const out = scrubChatRequest(request(), session);
    const args = JSON.parse(out.messages[3]!.tool_calls![0]!.function!.arguments!) as Record<string, unknown>;
    expect(args.email).toMatch(/^<<PII_EMAIL_ADDRESS_[0-9a-f]{32}>>$/);
    expect(args.note).toMatch(/^say "hi" to <<PII_PERSON_[0-9a-f]{32}>>$/);
    expect(args.n).toBe(3);
    const legacy = JSON.parse((out.messages[5]!.function_call as { arguments: string }).arguments) as {
      to: string;
    };
    expect(legacy.to).toBe(args.email); // same value, same placeholder across the whole request
  });

  it("replaces only the strings holding PII in tool-call arguments: numbers, spacing and escapes stay as sent", () => {
    const call = (args: string): ChatCompletionRequest => ({
      model: "m",
      messages: [
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: args } }],
        },
      ],
    });
    const argsOf = (body: ChatCompletionRequest) => body.messages[0]!.tool_calls![0]!.function!.arguments!;
    // Nothing to replace: the very same text (a parse and serialize turned 12345678901234567890 into …7000).
    const plain =
      '{ "id": 12345678901234567890, "x": 1.0, "big": 1e400, "q": "say \\"hi\\"", "u": "caf\\u00e9" }';
    expect(argsOf(scrubChatRequest(call(plain), engine.newSession()))).toBe(plain);
    // PII in a value or a key: that literal is replaced, the rest is byte for byte.
    const withPii = `{"${EMAIL}": 12345678901234567890,\n  "to" : "${EMAIL}", "list": ["a", "write to ${EMAIL} \\"now\\""], "n": 1.0}`;
    const session = engine.newSession();
    const out = argsOf(scrubChatRequest(call(withPii), session));
    const [ph] = session.placeholders();
    expect(out).toBe(
      `{"${ph}": 12345678901234567890,\n  "to" : "${ph}", "list": ["a", "write to ${ph} \\"now\\""], "n": 1.0}`,
    );
    expect(session.restore(out, { json: true })).toBe(withPii);
    // Maps keyed by PII (contacts by e-mail, by name): keys scrubbed, still distinct, restored.
    const keyed = `{"contacts":{"john.smith@example.com":{"phone":"${PHONE}"},"Sarah Connor":"VIP","${EMAIL}":2}}`;
    const s2 = engine.newSession();
    const keyedOut = argsOf(scrubChatRequest(call(keyed), s2));
    expect(keyedOut).not.toContain("john.smith@example.com");
    expect(keyedOut).not.toContain("Sarah Connor");
    expect(keyedOut).not.toContain(EMAIL);
    expect(Object.keys((JSON.parse(keyedOut) as { contacts: object }).contacts)).toHaveLength(3);
    expect(s2.restore(keyedOut, { json: true })).toBe(keyed);
    // A top-level string and an empty object.
    expect(argsOf(scrubChatRequest(call(`"${EMAIL}"`), engine.newSession()))).toMatch(
      /^"<<PII_EMAIL_ADDRESS_[0-9a-f]{32}>>"$/,
    );
    expect(argsOf(scrubChatRequest(call("{}"), engine.newSession()))).toBe("{}");
  });

  it("scrubs refusal parts in assistant history", () => {
    const session = engine.newSession();
    const body: ChatCompletionRequest = {
      model: "m",
      messages: [
        { role: "assistant", content: [{ type: "refusal", refusal: `I will not email ${EMAIL}.` }] },
      ],
    };
    const part = (
      scrubChatRequest(body, session).messages[0]!.content as unknown as Array<{ refusal: string }>
    )[0]!;
    expect(part.refusal).toMatch(/^I will not email <<PII_EMAIL_ADDRESS_[0-9a-f]{32}>>\.$/);
  });

  it("scrubs non-JSON arguments as text", () => {
    const session = engine.newSession();
    const body: ChatCompletionRequest = {
      model: "m",
      messages: [
        {
          role: "assistant",
          tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: `email ${EMAIL}` } }],
        },
      ],
    };
    expect(scrubChatRequest(body, session).messages[0]!.tool_calls![0]!.function!.arguments).toMatch(
      /^email <<PII_EMAIL_ADDRESS_/,
    );
  });
});

function completionFrom(out: ChatCompletionRequest): ChatCompletion {
  // The fake model echoes the placeholders it saw, in content and in a tool call.
  const phs = JSON.stringify(out).match(PH_RE)!;
  return {
    id: "c1",
    object: "chat.completion",
    created: 1,
    model: "gpt-4o",
    choices: [
      { index: 0, message: { role: "assistant", content: `Hello ${phs[0]}` }, finish_reason: "stop" },
      {
        index: 1,
        message: {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "t",
              type: "function",
              function: {
                name: "send",
                arguments: `{"to":"${phs[0]}","who":"${phs.find((p) => p.includes("PERSON"))}"}`,
              },
            },
          ],
        },
        finish_reason: "tool_calls",
      },
    ],
  };
}

describe("restoreChatCompletion", () => {
  it("restores content and tool-call arguments in every choice", () => {
    const session = engine.newSession();
    const out = scrubChatRequest(request(), session);
    const restored = restoreChatCompletion(completionFrom(out), session);
    expect(restored.choices[0]!.message.content).toBe(`Hello ${EMAIL}`);
    const args = JSON.parse(restored.choices[1]!.message.tool_calls![0]!.function!.arguments!) as unknown;
    expect(args).toEqual({ to: EMAIL, who: "Maria Gonzalez" });
  });
});

function chunk(choices: ChatCompletionChunk["choices"]): ChatCompletionChunk {
  return { id: "s1", object: "chat.completion.chunk", created: 1, model: "gpt-4o", choices };
}

/** Pushes a chunk that ends no held text: it comes back alone. */
function one(r: ChunkRestorer, c: ChatCompletionChunk): ChatCompletionChunk {
  const out = r.push(c);
  expect(out).toEqual([c]);
  return out[0]!;
}

describe("createChunkRestorer", () => {
  it("restores content and tool-call argument deltas split at every position, per choice and tool call", () => {
    const session = engine.newSession();
    const out = scrubChatRequest(request(), session);
    const phs = JSON.stringify(out).match(PH_RE)!;
    const person = phs.find((p) => p.includes("PERSON"))!;
    const content = `Mail ${phs[0]} now.`;
    const args = `{"to":"${phs[0]}","who":"${person}"}`;
    for (let i = 0; i <= content.length; i += 1) {
      const j = Math.min(i, args.length);
      const r = createChunkRestorer(session);
      const chunks = [
        chunk([
          { index: 0, delta: { role: "assistant", content: content.slice(0, i) }, finish_reason: null },
        ]),
        chunk([
          {
            index: 1,
            delta: {
              tool_calls: [
                {
                  index: 0,
                  id: "t",
                  type: "function",
                  function: { name: "send", arguments: args.slice(0, j) },
                },
              ],
            },
            finish_reason: null,
          },
        ]),
        chunk([{ index: 0, delta: { content: content.slice(i) }, finish_reason: null }]),
        chunk([
          {
            index: 1,
            delta: { tool_calls: [{ index: 0, function: { arguments: args.slice(j) } }] },
            finish_reason: null,
          },
        ]),
        chunk([{ index: 0, delta: {}, finish_reason: "stop" }]),
      ].flatMap((c) => r.push(c));
      chunks.push(...r.flush());
      let text = "";
      let argText = "";
      for (const c of chunks)
        for (const ch of c.choices) {
          if (ch.index === 0 && typeof ch.delta.content === "string") text += ch.delta.content;
          if (ch.index === 1)
            for (const t of ch.delta.tool_calls ?? []) argText += t.function?.arguments ?? "";
        }
      expect(text, `content split at ${i}`).toBe(`Mail ${EMAIL} now.`);
      expect(JSON.parse(argText), `args split at ${j}`).toEqual({ to: EMAIL, who: "Maria Gonzalez" });
    }
  });

  it("restores the legacy function_call's streamed arguments split at every position", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const args = `{"to":"${ph}"}`;
    for (let i = 0; i <= args.length; i++) {
      const r = createChunkRestorer(session);
      const chunks = [
        chunk([
          {
            index: 0,
            delta: { role: "assistant", function_call: { name: "send", arguments: args.slice(0, i) } },
            finish_reason: null,
          },
        ]),
        chunk([{ index: 0, delta: { function_call: { arguments: args.slice(i) } }, finish_reason: null }]),
        chunk([{ index: 0, delta: {}, finish_reason: "function_call" }]),
      ].flatMap((c) => r.push(c));
      chunks.push(...r.flush());
      const sent = chunks
        .flatMap((c) => c.choices)
        .map((ch) => (ch.delta.function_call as { arguments?: string } | undefined)?.arguments ?? "")
        .join("");
      expect(JSON.parse(sent), `split at ${i}`).toEqual({ to: EMAIL });
    }
  });

  it("releases held text with the chunk carrying finish_reason", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const r = createChunkRestorer(session);
    const a = one(r, chunk([{ index: 0, delta: { content: "to " + ph.slice(0, 10) }, finish_reason: null }]));
    expect(a.choices[0]!.delta.content).toBe("to ");
    const b = one(r, chunk([{ index: 0, delta: {}, finish_reason: "length" }]));
    expect(b.choices[0]!.delta.content).toBe(ph.slice(0, 10));
    expect(r.flush()).toEqual([]);
  });

  it("releases held text with a finish_reason chunk that has no delta (or a null one)", () => {
    for (const last of [
      { index: 0, finish_reason: "stop" },
      { index: 0, delta: null, finish_reason: "stop" },
    ]) {
      const session = engine.newSession();
      const ph = session.scrub(EMAIL);
      const r = createChunkRestorer(session);
      one(r, chunk([{ index: 0, delta: { content: "to " + ph.slice(0, 10) }, finish_reason: null }]));
      const b = one(r, chunk([last as never]));
      expect(b.choices[0]!.delta.content).toBe(ph.slice(0, 10));
      expect(b.choices[0]!.finish_reason).toBe("stop");
      expect(r.flush()).toEqual([]);
    }
  });

  it("restores reasoning and custom tool-call input deltas split at every position", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const text = `to ${ph} ok`;
    for (let i = 1; i < text.length; i++) {
      const r = createChunkRestorer(session);
      const parts = [text.slice(0, i), text.slice(i)];
      const out = [
        ...parts.map((p) =>
          one(
            r,
            chunk([
              {
                index: 0,
                delta: {
                  reasoning_content: p,
                  tool_calls: [{ index: 0, type: "custom", custom: { input: p } } as never],
                },
                finish_reason: null,
              },
            ]),
          ),
        ),
        one(r, chunk([{ index: 0, delta: {}, finish_reason: "stop" }])),
        ...r.flush(),
      ];
      let reasoning = "";
      let input = "";
      for (const c of out)
        for (const ch of c.choices) {
          if (typeof ch.delta.reasoning_content === "string") reasoning += ch.delta.reasoning_content;
          for (const t of (ch.delta.tool_calls ?? []) as Array<{ custom?: { input?: string } }>)
            input += t.custom?.input ?? "";
        }
      expect(reasoning, `split at ${i}`).toBe(`to ${EMAIL} ok`);
      expect(input, `split at ${i}`).toBe(`to ${EMAIL} ok`);
    }
  });

  it("flush returns chunks for text still held when the stream ends without finish_reason", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const r = createChunkRestorer(session);
    one(r, chunk([{ index: 0, delta: { content: "x" + ph.slice(0, 5) }, finish_reason: null }]));
    const rest = r.flush();
    expect(rest).toHaveLength(1);
    expect(rest[0]!.id).toBe("s1");
    expect(rest[0]!.choices[0]!.delta.content).toBe(ph.slice(0, 5));
  });
});

/** What a client of the Messages or Responses wire sees: the blocks in order, with their text or arguments. */
function blocks(chunks: ChatCompletionChunk[]): Array<{ type: "text" | "tool"; body: string }> {
  const out: Array<{ type: "text" | "tool"; body: string }> = [];
  const walker = walkChunks({
    start() {},
    openText(_o, index) {
      out[index] = { type: "text", body: "" };
    },
    text(_o, index, delta) {
      out[index]!.body += delta;
    },
    openTool(_o, index) {
      out[index] = { type: "tool", body: "" };
    },
    toolArguments(_o, index, delta) {
      out[index]!.body += delta;
    },
    close() {},
    finish() {},
  });
  for (const c of chunks) walker.push(c);
  walker.end();
  return out;
}

const delta = (d: ChatCompletionChunk["choices"][number]["delta"], finish: string | null = null) =>
  chunk([{ index: 0, delta: d, finish_reason: finish }]);
const open = (index: number, id: string, args = "") => ({
  index,
  id,
  type: "function",
  function: { name: "lookup", arguments: args },
});
const args = (index: number, a: string) => ({ index, function: { arguments: a } });

describe("createChunkRestorer: held text comes out before the output that ends it", () => {
  it("text held as a possible placeholder prefix comes out in a chunk of its own before a tool call", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    for (const held of ["<", "<<", ph.slice(0, 10), ph.slice(0, -1)]) {
      const r = createChunkRestorer(session);
      expect(one(r, delta({ role: "assistant", content: "" })).choices[0]!.delta.content).toBe("");
      expect(one(r, delta({ content: "Checking if a " + held })).choices[0]!.delta.content).toBe(
        "Checking if a ",
      );
      const call = delta({ tool_calls: [open(0, "call_1", '{"q":1}')] });
      const out = r.push(call);
      expect(out).toHaveLength(2);
      expect(out[0]).toEqual(delta({ content: held }));
      expect(out[1]).toBe(call);
      expect(call.choices[0]!.delta).toEqual({ tool_calls: [open(0, "call_1", '{"q":1}')] });
      const last = delta({}, "tool_calls");
      expect(r.push(last)).toEqual([last]);
      expect(last.choices[0]!.delta).toEqual({});
      expect(r.flush()).toEqual([]);
    }
  });

  it("the Messages and Responses wires get one text block, then the tool call, whatever the chunk boundaries", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const text = `Mailing ${ph} if a <`;
    const call = `{"to":"${ph}"}`;
    for (let i = 0; i <= text.length; i++)
      for (const j of [0, 3, call.length - 20, call.length - 1]) {
        const out = restoreChunkList(
          [
            delta({ role: "assistant", content: text.slice(0, i) }),
            delta({ content: text.slice(i) }),
            delta({ tool_calls: [open(0, "call_1", call.slice(0, j))] }),
            delta({ tool_calls: [args(0, call.slice(j))] }),
            delta({}, "tool_calls"),
          ],
          session,
        );
        expect(blocks(out), `text split at ${i}, arguments at ${j}`).toEqual([
          { type: "text", body: `Mailing ${EMAIL} if a <` },
          { type: "tool", body: `{"to":"${EMAIL}"}` },
        ]);
      }
  });

  it("text and the tool call it precedes in one delta: the held text stays in that delta, before the call", () => {
    const session = engine.newSession();
    session.scrub(EMAIL);
    const r = createChunkRestorer(session);
    const both = delta({ content: "Checking if a <", tool_calls: [open(0, "call_1", "{}")] });
    expect(r.push(both)).toEqual([both]);
    expect(both.choices[0]!.delta.content).toBe("Checking if a <");
    // Same for a refusal after content: one text block on those wires, content first.
    const r2 = createChunkRestorer(session);
    const mixed = delta({ content: "a <", refusal: "no" });
    expect(r2.push(mixed)).toEqual([mixed]);
    expect(mixed.choices[0]!.delta).toMatchObject({ content: "a <", refusal: "no" });
  });

  it("another text field ends held text: content before a refusal, reasoning before content", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const r = createChunkRestorer(session);
    one(r, delta({ reasoning_content: "think " + ph.slice(0, 4) }));
    const answer = delta({ content: "Sure <" });
    expect(r.push(answer)).toEqual([delta({ reasoning_content: ph.slice(0, 4) }), answer]);
    expect(answer.choices[0]!.delta.content).toBe("Sure ");
    const refusal = delta({ refusal: "I can't" });
    expect(r.push(refusal)).toEqual([delta({ content: "<" }), refusal]);
    one(r, delta({}, "stop"));
    expect(r.flush()).toEqual([]);
  });

  it("a placeholder split across deltas is still restored when deltas without output come in between", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    for (let i = 1; i < ph.length; i++) {
      const r = createChunkRestorer(session);
      const out = [
        delta({ content: "to " + ph.slice(0, i) }),
        delta({ role: "assistant" }),
        delta({}),
        delta({ content: "", refusal: "", tool_calls: null, function_call: null } as never),
        delta({ content: ph.slice(i) + "." }),
        delta({}, "stop"),
      ].flatMap((c) => r.push(c));
      expect(out).toHaveLength(6);
      expect(out.map((c) => c.choices[0]!.delta.content ?? "").join(""), `split at ${i}`).toBe(
        `to ${EMAIL}.`,
      );
    }
  });

  it("tool-call arguments: kept while other calls open and interleave, or text comes between", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    // Call 0's arguments, interleaved with call 1's (already open), still complete into the placeholder.
    for (let i = 1; i < ph.length; i++) {
      const out = restoreChunkList(
        [
          delta({ tool_calls: [open(0, "a"), open(1, "b")] }),
          delta({ tool_calls: [args(0, `{"to":"${ph.slice(0, i)}`)] }),
          delta({ tool_calls: [args(1, "{}")] }),
          delta({ tool_calls: [args(0, `${ph.slice(i)}"}`)] }),
          delta({}, "tool_calls"),
        ],
        session,
      );
      expect(blocks(out), `split at ${i}`).toEqual([
        { type: "tool", body: `{"to":"${EMAIL}"}` },
        { type: "tool", body: "{}" },
      ]);
    }
    // A call that opens, or text, between the halves of a placeholder: the arguments still complete into it (their
    // later deltas land in their own call on every wire), on every split.
    for (const between of [
      delta({ tool_calls: [open(1, "b", "{}")] }),
      delta({ content: "Sending now." }),
      delta({ content: "Sending now.", tool_calls: [open(1, "b", "{}")] }),
    ])
      for (let i = 1; i < ph.length; i++) {
        const out = restoreChunkList(
          [
            delta({ tool_calls: [open(0, "a", `{"to":"${ph.slice(0, i)}`)] }),
            structuredClone(between),
            delta({ tool_calls: [args(0, `${ph.slice(i)}"}`)] }),
            delta({}, "tool_calls"),
          ],
          session,
        );
        const text = JSON.stringify(out);
        expect(text, `split at ${i}`).not.toContain("PII_");
        expect(text, `split at ${i}`).toContain(EMAIL);
      }
    // Held arguments that never complete come out at the end, in their own call.
    const r = createChunkRestorer(session);
    one(r, delta({ tool_calls: [open(0, "a", '{"x":"<<')] }));
    const next = delta({ tool_calls: [open(1, "b", "{}")] });
    expect(r.push(next)).toEqual([next]);
    const end = r.push(delta({}, "tool_calls"));
    expect(end.at(-1)!.choices[0]!.delta.tool_calls).toEqual([args(0, "<<")]);
  });

  it("a new call on the same index (some providers number every call 0) does not take the last one's held text", () => {
    const session = engine.newSession();
    session.scrub(EMAIL);
    const out = restoreChunkList(
      [
        delta({ tool_calls: [open(0, "a", '{"x":"<')] }),
        delta({ tool_calls: [open(0, "b", '{"y":1}')] }),
        delta({}, "tool_calls"),
      ],
      session,
    );
    expect(out).toHaveLength(4);
    expect(out[1]).toEqual(delta({ tool_calls: [args(0, "<")] }));
    expect(out[2]!.choices[0]!.delta.tool_calls).toEqual([open(0, "b", '{"y":1}')]);
    expect(blocks(out)).toEqual([
      { type: "tool", body: '{"x":"<' },
      { type: "tool", body: '{"y":1}' },
    ]);
  });

  it("other choices are not affected, and one chunk before carries every choice's ended text", () => {
    const session = engine.newSession();
    session.scrub(EMAIL);
    const r = createChunkRestorer(session);
    one(
      r,
      chunk([
        { index: 0, delta: { content: "a <" }, finish_reason: null },
        { index: 1, delta: { content: "b <" }, finish_reason: null },
      ]),
    );
    const other = chunk([{ index: 1, delta: { content: "<PII" }, finish_reason: null }]);
    expect(r.push(other)).toEqual([other]);
    const both = chunk([
      { index: 0, delta: { tool_calls: [open(0, "a", "{}")] }, finish_reason: null },
      { index: 1, delta: { tool_calls: [open(0, "b", "{}")] }, finish_reason: null },
    ]);
    expect(r.push(both)).toEqual([
      chunk([
        { index: 0, delta: { content: "<" }, finish_reason: null },
        { index: 1, delta: { content: "<<PII" }, finish_reason: null },
      ]),
      both,
    ]);
  });
});

describe("restoreChunkList", () => {
  it("restores a whole stream; the usage chunk stays last, other choice-less chunks keep their place", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const filter = { ...chunk([]), prompt_filter_results: [] } as ChatCompletionChunk;
    const usage = { ...chunk([]), usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } };
    const out = restoreChunkList(
      [
        filter,
        chunk([{ index: 0, delta: { content: "to " + ph.slice(0, 12) }, finish_reason: null }]),
        chunk([{ index: 0, delta: { content: ph.slice(12) + "!" }, finish_reason: null }]),
        usage,
      ],
      session,
    );
    expect(out[0]).toBe(filter);
    expect(out.slice(1, 3).map((c) => c.choices[0]!.delta.content)).toEqual(["to ", `${EMAIL}!`]);
    expect(out.at(-1)).toBe(usage);
    expect(out).toHaveLength(4);
  });
});

describe("restoreChunkList: chunks for held text", () => {
  it("take their id from a real chunk, not from Azure's empty prompt_filter chunk", () => {
    const session = engine.newSession();
    const ph = session.scrub(EMAIL);
    const filter = { id: "", object: "", created: 0, model: "", choices: [], prompt_filter_results: [] };
    const out = restoreChunkList(
      [
        filter as unknown as ChatCompletionChunk,
        chunk([{ index: 0, delta: { content: "to " + ph.slice(0, 9) }, finish_reason: null }]),
      ],
      session,
    );
    expect(out.at(-1)).toMatchObject({ id: "s1", object: "chat.completion.chunk", model: "gpt-4o" });
    expect(out.at(-1)!.choices[0]!.delta.content).toBe(ph.slice(0, 9));
  });
});

describe("scrubEmbeddingInput", () => {
  it("redacts strings and string arrays irreversibly, leaves token arrays", () => {
    const session = engine.newSession();
    expect(scrubEmbeddingInput(`mail ${EMAIL}`, session)).toBe("mail <<REDACTED_EMAIL_ADDRESS>>");
    expect(scrubEmbeddingInput(["Maria Gonzalez lives in Berlin", "nothing here"], session)).toEqual([
      "<<REDACTED_PERSON>> lives in <<REDACTED_LOCATION>>",
      "nothing here",
    ]);
    expect(scrubEmbeddingInput([1, 2, 3], session)).toEqual([1, 2, 3]);
    expect(scrubEmbeddingInput([[1, 2], [3]], session)).toEqual([[1, 2], [3]]);
    expect(session.counts().PERSON).toBe(1);
  });
});
