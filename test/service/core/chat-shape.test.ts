/**
 * The hand-written chat body check (isPlainChat) lets a body skip zod: it must never accept a body zod refuses, and
 * what it passes on must be what zod would have returned. Checked on the bodies clients send and on thousands of
 * seeded variations of every field's type and range.
 */
import { describe, expect, it } from "vitest";
import { chatSchema, isPlainChat } from "../../../service/stages/parse";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Values of every JSON type, including the edges of the ranges the schema checks. */
const ODD: unknown[] = [
  undefined,
  null,
  true,
  false,
  0,
  1,
  -1,
  0.5,
  1.5,
  2,
  2.0000001,
  3,
  2 ** 53,
  -0,
  "",
  "x",
  "user",
  [],
  [{}],
  [{ type: "text", text: "hi" }],
  [{ type: 1 }],
  [{ type: "text", text: ["a"] }],
  [{ type: "text", text: null }],
  [{ function: { name: "f", arguments: "{}" } }],
  [{ function: { name: "f", arguments: { a: 1 } } }],
  [{ function: null }],
  [{ id: "c", type: "custom", custom: { name: "g", input: "x" } }],
  { name: "f", arguments: "{}" },
  { name: 5, arguments: "{}" },
  { name: "f" },
  [null],
  ["a"],
  {},
  { type: "function" },
  [{ type: "function", function: { name: "g", parameters: {} } }],
  [{ type: "function", function: 5 }],
  [{ type: "function", function: { parameters: {} } }],
  { include_usage: true },
  { include_usage: "yes" },
];

const base = () => ({
  model: "gpt-4o",
  messages: [
    { role: "system", content: "Be brief." },
    {
      role: "user",
      content: [
        { type: "text", text: "hi" },
        { type: "image_url", image_url: { url: "x" } },
      ],
    },
    {
      role: "assistant",
      content: null,
      tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
    },
    { role: "tool", tool_call_id: "c1", content: "42", name: "f" },
  ],
  stream: false,
  stream_options: { include_usage: true },
  max_tokens: 64,
  max_completion_tokens: 32,
  n: 1,
  temperature: 0.7,
  top_p: 1,
  tools: [{ type: "function", function: { name: "f", parameters: {} } }],
  response_format: { type: "json_schema", json_schema: { name: "x", schema: {} } },
  seed: 7,
  unknown_field: { nested: [1, 2] },
});

const TOP = [
  "model",
  "messages",
  "stream",
  "stream_options",
  "max_tokens",
  "max_completion_tokens",
  "n",
  "temperature",
  "top_p",
  "tools",
  "seed",
];
const MSG = ["role", "content", "name", "tool_calls", "function_call", "tool_call_id"];

function agree(body: unknown): void {
  const zod = chatSchema.safeParse(body);
  if (isPlainChat(body)) {
    expect(zod.success, JSON.stringify(body)).toBe(true);
    expect(zod.data).toEqual(body);
  }
}

describe("isPlainChat", () => {
  it("accepts the bodies clients send, exactly as zod returns them", () => {
    const bodies = [
      base(),
      { model: "m", messages: [{ role: "user", content: "hi" }] },
      { model: "m", messages: [{ role: "developer", content: "x" }], stream: true, temperature: null },
      {
        model: "m",
        messages: [
          { role: "assistant", content: null, function_call: { name: "f", arguments: "{}" } },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "c", type: "custom", custom: { name: "g", input: "x" } }],
          },
          { role: "user", content: [{ type: "input_audio", input_audio: { data: "..", format: "wav" } }] },
        ],
      },
    ];
    for (const b of bodies) {
      expect(isPlainChat(b)).toBe(true);
      expect(chatSchema.parse(b)).toEqual(b);
    }
  });

  it("refuses what zod refuses, field by field", () => {
    const refused = [
      null,
      [],
      "x",
      { messages: [{ role: "user", content: "hi" }] },
      { model: "", messages: [{ role: "user", content: "hi" }] },
      { model: "m", messages: [] },
      { model: "m", messages: [{ content: "hi" }] },
      { model: "m", messages: [{ role: "user", content: 5 }] },
      { model: "m", messages: [{ role: "user", content: [{ text: "no type" }] }] },
      { model: "m", messages: [{ role: "user", tool_calls: [[]] }] },
      { ...base(), max_tokens: 0 },
      { ...base(), max_tokens: 1.5 },
      { ...base(), max_tokens: 2 ** 53 },
      { ...base(), temperature: 2.5 },
      { ...base(), top_p: -0.1 },
      { ...base(), stream: "true" },
      { ...base(), stream_options: { include_usage: 1 } },
      { ...base(), tools: [{ function: {} }] },
      { ...base(), tools: [{ type: "function", function: 5 }] },
      { ...base(), tools: [{ type: "function", function: { name: 5 } }] },
      // Text the policy and the PII scrub read must be strings.
      { model: "m", messages: [{ role: "user", content: [{ type: "text", text: ["a@b.co"] }] }] },
      { model: "m", messages: [{ role: "user", content: [{ type: "text", text: { a: 1 } }] }] },
      { model: "m", messages: [{ role: "assistant", tool_calls: [{ function: null }] }] },
      {
        model: "m",
        messages: [{ role: "assistant", tool_calls: [{ function: { name: "f", arguments: { a: 1 } } }] }],
      },
      {
        model: "m",
        messages: [{ role: "assistant", tool_calls: [{ function: { name: 5, arguments: "{}" } }] }],
      },
      { model: "m", messages: [{ role: "assistant", function_call: { name: "f", arguments: { to: "x" } } }] },
      { model: "m", messages: [{ role: "assistant", function_call: "f" }] },
    ];
    for (const b of refused) {
      expect(isPlainChat(b), JSON.stringify(b)).toBe(false);
      expect(chatSchema.safeParse(b).success, JSON.stringify(b)).toBe(false);
    }
  });

  it("leaves a body with an own __proto__ member (at any level) to zod, which drops it", () => {
    for (const text of [
      '{"model":"m","messages":[{"role":"user","content":"hi"}],"__proto__":{"logit_bias":{"1":100}}}',
      '{"model":"m","messages":[{"role":"user","content":"hi","__proto__":{"x":1}}]}',
      '{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","__proto__":{}}]}]}',
      '{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"__proto__":{}}}',
    ]) {
      const body: unknown = JSON.parse(text);
      expect(isPlainChat(body), text).toBe(false);
      expect(JSON.stringify(chatSchema.parse(body))).not.toContain("__proto__");
    }
  });

  it("never accepts a body zod refuses, over 20,000 seeded variations", () => {
    const rand = rng(20261125);
    const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const body = base() as Record<string, unknown>;
      for (let j = 0, n = 1 + Math.floor(rand() * 3); j < n; j++) {
        if (rand() < 0.5) {
          const k = pick(TOP);
          const v = structuredClone(pick(ODD));
          if (v === undefined) delete body[k];
          else body[k] = v;
        } else {
          const msgs = body.messages as Array<Record<string, unknown>>;
          if (!Array.isArray(msgs) || msgs.length === 0) continue;
          const m = pick(msgs);
          if (m === null || typeof m !== "object") continue;
          const k = pick(MSG);
          const v = structuredClone(pick(ODD));
          if (v === undefined) delete m[k];
          else m[k] = v;
        }
      }
      if (isPlainChat(body)) accepted++;
      agree(JSON.parse(JSON.stringify(body)));
    }
    // Both outcomes were exercised.
    expect(accepted).toBeGreaterThan(1_000);
    expect(accepted).toBeLessThan(19_000);
  });
});
