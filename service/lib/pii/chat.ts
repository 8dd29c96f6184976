// PII on the OpenAI chat and embeddings wire formats: scrub what the provider would see, restore what the
// client gets back (whole responses and streamed chunks).
//
// Scrubbed: every message's string content and text/refusal parts (system, developer, user, assistant, tool),
// assistant tool_calls[].function.arguments and legacy function_call.arguments (string values and keys inside the
// JSON, which stays valid JSON). Not scrubbed: image/audio/file parts, tool definitions, and message `name`
// fields — the API restricts `name` to [a-zA-Z0-9_-]{1,64}, so a placeholder there would turn the request
// into a 400, and it is a participant label the model does not echo.
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatMessage,
  ContentPart,
  EmbeddingRequest,
  ToolCall,
} from "../../types";
import { MODEL_TEXT_FIELDS } from "../../types";
import type { PiiSession, Restorer, StreamRestorer } from "./session";

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Scrubs tool-call arguments: the strings inside the JSON — values and keys (maps keyed by e-mail, user or host are
 * common in tool calls), each string literal replaced in place, so everything else stays byte for byte as the
 * client sent it — numbers beyond double precision (a 20-digit id), `1.0`, spacing, key order (a parse-and-serialize
 * changed 12345678901234567890 into 12345678901234567000). A scrubbed key stays a unique key: equal values get one
 * placeholder, different values different ones. Arguments that are not JSON are scrubbed as plain text.
 */
export function scrubArguments(args: string, session: PiiSession): string {
  try {
    JSON.parse(args);
  } catch {
    return session.scrub(args);
  }
  // Valid JSON from here: every quote outside a string opens a literal, which ends at the next unescaped quote.
  let out = "";
  let last = 0;
  for (let i = 0; i < args.length; i++) {
    if (args.charCodeAt(i) !== QUOTE) continue;
    let j = i + 1;
    while (args.charCodeAt(j) !== QUOTE) j += args.charCodeAt(j) === BACKSLASH ? 2 : 1;
    const value = JSON.parse(args.slice(i, j + 1)) as string;
    const scrubbed = session.scrub(value);
    if (scrubbed !== value) {
      out += args.slice(last, i) + JSON.stringify(scrubbed);
      last = j + 1;
    }
    i = j;
  }
  return last === 0 ? args : out + args.slice(last);
}

function scrubContent(content: ChatMessage["content"], session: PiiSession): ChatMessage["content"] {
  if (typeof content === "string") return session.scrub(content);
  if (!Array.isArray(content)) return content;
  return content.map((part: ContentPart) => {
    if (typeof part.text === "string") return { ...part, text: session.scrub(part.text) };
    // Assistant history may carry {type: "refusal", refusal: "..."} parts.
    if (typeof part.refusal === "string") return { ...part, refusal: session.scrub(part.refusal) };
    return part;
  });
}

function scrubToolCalls(calls: ToolCall[], session: PiiSession): ToolCall[] {
  return calls.map((c) => {
    if (c.function !== undefined && typeof c.function.arguments === "string")
      return { ...c, function: { ...c.function, arguments: scrubArguments(c.function.arguments, session) } };
    // A custom (freeform) tool's call: its input is free text.
    const custom = c.custom as { input?: unknown } | undefined | null;
    if (typeof custom === "object" && custom !== null && typeof custom.input === "string")
      return { ...c, custom: { ...custom, input: session.scrub(custom.input) } };
    return c;
  });
}

/** A copy of `body` with every text the provider would see scrubbed (reversibly, secrets irreversibly). */
export function scrubChatRequest<T extends ChatCompletionRequest>(body: T, session: PiiSession): T {
  const messages = body.messages.map((m) => {
    const out: ChatMessage = { ...m };
    if (m.content !== undefined) out.content = scrubContent(m.content, session);
    for (const field of MODEL_TEXT_FIELDS) {
      const text = m[field];
      if (typeof text === "string") out[field] = session.scrub(text);
    }
    if (Array.isArray(m.tool_calls)) out.tool_calls = scrubToolCalls(m.tool_calls, session);
    const fc = m.function_call as { name?: string; arguments?: string } | undefined;
    if (fc !== undefined && fc !== null && typeof fc.arguments === "string")
      out.function_call = { ...fc, arguments: scrubArguments(fc.arguments, session) };
    return out;
  });
  const scrubbed: T = { ...body, messages };
  // Predicted output (the document being edited, usually): text the provider reads like the prompt.
  const prediction = body.prediction as { content?: unknown } | undefined | null;
  if (typeof prediction === "object" && prediction !== null && prediction.content !== undefined) {
    const content = scrubContent(prediction.content as ChatMessage["content"], session);
    (scrubbed as ChatCompletionRequest).prediction = { ...prediction, content };
  }
  return scrubbed;
}

type CustomCall = { custom?: { name?: string; input?: string } | null };

function restoreMessage(m: ChatMessage, session: Restorer): void {
  if (typeof m.content === "string") m.content = session.restore(m.content);
  else if (Array.isArray(m.content))
    for (const p of m.content) if (typeof p.text === "string") p.text = session.restore(p.text);
  for (const field of MODEL_TEXT_FIELDS) {
    const text = m[field];
    if (typeof text === "string") m[field] = session.restore(text);
  }
  if (Array.isArray(m.tool_calls))
    for (const c of m.tool_calls) {
      if (c.function !== undefined && typeof c.function.arguments === "string")
        c.function.arguments = session.restore(c.function.arguments, { json: true });
      const custom = (c as CustomCall).custom;
      if (custom && typeof custom.input === "string") custom.input = session.restore(custom.input);
    }
  const fc = m.function_call as { arguments?: unknown } | undefined | null;
  if (fc !== undefined && fc !== null && typeof fc.arguments === "string")
    fc.arguments = session.restore(fc.arguments, { json: true });
}

/** Restores placeholders in every choice's content, refusal, reasoning and tool-call input (in place; returns it). */
export function restoreChatCompletion<T extends ChatCompletion>(json: T, session: Restorer): T {
  if (Array.isArray(json.choices))
    for (const c of json.choices)
      if (c.message !== undefined && c.message !== null) restoreMessage(c.message, session);
  return json;
}

type Choice = ChatCompletionChunk["choices"][number];
type Delta = Choice["delta"];
type DeltaCall = NonNullable<Delta["tool_calls"]>[number] & CustomCall;

export interface ChunkRestorer {
  /**
   * Restores one parsed chunk in place; text that may be a split placeholder is held back. Returns the chunks to
   * send now, in order: first a chunk releasing held text that this chunk interrupts (when there is any), then the
   * chunk itself.
   */
  push(chunk: ChatCompletionChunk): ChatCompletionChunk[];
  /**
   * Chunks carrying text still held at stream end (normally none: a choice's text is released with the
   * chunk that carries its finish_reason). Send them before the final usage chunk and `[DONE]`.
   */
  flush(): ChatCompletionChunk[];
}

/**
 * Held text put back into a delta. `kind` is a text field's name, `f:<k>` (tool call k's arguments), `u:<k>`
 * (custom tool call k's input) or `fc` (the legacy function_call's arguments).
 */
function appendHeld(d: Delta, kind: string, rest: string): void {
  if (kind === "fc") {
    const fc = (d.function_call ?? {}) as { arguments?: string };
    d.function_call = { ...fc, arguments: (fc.arguments ?? "") + rest };
    return;
  }
  if (kind.startsWith("f:") || kind.startsWith("u:")) {
    const k = Number(kind.slice(2));
    const calls = (d.tool_calls ??= []) as DeltaCall[];
    let t = calls.find((x) => (x.index ?? 0) === k);
    if (t === undefined) {
      t = { index: k };
      calls.push(t);
    }
    if (kind[0] === "f") t.function = { ...t.function, arguments: (t.function?.arguments ?? "") + rest };
    else t.custom = { ...t.custom, input: (t.custom?.input ?? "") + rest };
    return;
  }
  const current = d[kind];
  d[kind] = (typeof current === "string" ? current : "") + rest;
}

/**
 * A delta's text fields in output order: reasoning before the answer, content before a refusal (the Messages and
 * Responses wires write content and refusal into one text block, in that order; see lib/chunk-blocks.ts).
 */
const TEXT_FIELDS = ["reasoning_content", "reasoning", "content", "refusal"] as const;
/** Other output a delta may carry (audio): it ends any text held before it. */
const OTHER_OUTPUT = ["audio"] as const;

/**
 * One piece of output in a delta, in output order: a text field (`kind` its name; `output` false when it is the
 * empty string), other output (`kind` "other"), or a tool-call entry (`kind` `call:<k>`; `newCall` when it opens a
 * call: an index not seen before in the choice, or an id other than the one the index had).
 */
interface Part {
  kind: string;
  output: boolean;
  newCall: boolean;
}

/** `part` is more of the held stream `held` (a key's kind: text field, `f:<k>`, `u:<k>`). */
function continues(held: string, part: Part): boolean {
  if (held.startsWith("f:") || held.startsWith("u:"))
    return part.kind === `call:${held.slice(2)}` && !part.newCall;
  return part.kind === held && part.output;
}

/**
 * `part` ends what `held` holds: text released after `part` would come out in the wrong place (on the Messages and
 * Responses wires, in a new block after a tool call; after a refusal that followed it in the same block).
 * Text fields are ended by other text fields, other output, and a call that opens (which closes the text's block) —
 * not by argument deltas of a call already open (text after them stays in its block; see lib/chunk-blocks.ts).
 * A call's arguments (or input) are ended only by the choice's end (or a new call taking over its index): whatever
 * comes between, their later
 * deltas land in that call (the chat wire keys them by index; the block walker keeps the call's block for them),
 * so a placeholder split around text or another call's deltas is still restored whole.
 */
function interrupts(part: Part, held: string): boolean {
  if (!part.output || continues(held, part)) return false;
  // Except a new call on the same index (some providers number every call 0): it takes the index over.
  if (held.startsWith("f:") || held.startsWith("u:"))
    return part.newCall && part.kind === `call:${held.slice(2)}`;
  if (held === "fc") return false;
  if (part.kind.startsWith("call:")) return part.newCall;
  return true;
}

/**
 * Streaming restoration for chat completion chunks: one stream restorer per (choice, field) — content, refusal,
 * reasoning — and one per (choice, tool-call index) for arguments or custom input, so interleaved deltas cannot mix.
 * Held text is released by the next delta of its own field (restored whole when the placeholder completes), by a
 * delta of other output that ends it (see `interrupts`; released in a chunk of its own sent before that delta, so
 * the order of the output stays as the provider sent it), or by the choice's finish_reason.
 */
export function createChunkRestorer(session: Restorer): ChunkRestorer {
  // Keyed `<choice>|<kind>` (see appendHeld).
  const streams = new Map<string, StreamRestorer>();
  /** `<choice>|<tool-call index>` → the id the call brought (as lib/chunk-blocks.ts tells calls apart). */
  const calls = new Map<string, string | undefined>();
  let template: Pick<ChatCompletionChunk, "id" | "object" | "created" | "model"> | null = null;

  const stream = (key: string, json: boolean): StreamRestorer => {
    let s = streams.get(key);
    if (s === undefined) {
      s = session.createStreamRestorer({ json });
      streams.set(key, s);
    }
    return s;
  };

  /** Releases what the choice's restorers hold for the kinds `which` accepts, as (kind, text), and forgets them. */
  function release(index: number, which: (kind: string) => boolean = () => true): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    const prefix = `${index}|`;
    for (const [key, s] of streams) {
      if (!key.startsWith(prefix) || !which(key.slice(prefix.length))) continue;
      const rest = s.flush();
      streams.delete(key);
      if (rest !== "") out.push([key.slice(prefix.length), rest]);
    }
    return out;
  }

  /** The delta's output, in order (see Part); records the tool calls it opens. */
  function partsOf(i: number, d: Delta): Part[] {
    const parts: Part[] = [];
    for (const field of TEXT_FIELDS) {
      const text = d[field];
      if (typeof text === "string") parts.push({ kind: field, output: text !== "", newCall: false });
    }
    // The legacy function call (functions / function_call): its arguments stream like a tool call's.
    const fc = d.function_call;
    if (typeof fc === "object" && fc !== null) parts.push({ kind: "fc", output: true, newCall: false });
    for (const field of OTHER_OUTPUT) {
      const v = d[field];
      if (typeof v === "object" && v !== null) parts.push({ kind: "other", output: true, newCall: false });
    }
    if (Array.isArray(d.tool_calls))
      for (const t of d.tool_calls as DeltaCall[]) {
        const key = `${i}|${t.index ?? 0}`;
        const known = calls.get(key);
        const newCall =
          !calls.has(key) || (typeof t.id === "string" && known !== undefined && t.id !== known);
        if (newCall) calls.set(key, typeof t.id === "string" ? t.id : undefined);
        parts.push({ kind: `call:${t.index ?? 0}`, output: true, newCall });
      }
    return parts;
  }

  /** Restores one choice in place; returns the delta to send before it (held text it ends), or null. */
  function restoreChoice(c: Choice): Delta | null {
    const finished = c.finish_reason !== null && c.finish_reason !== undefined;
    // Some servers send the last chunk as `{index, finish_reason}` without a delta: it still releases what is held.
    if (c.delta === undefined || c.delta === null) {
      if (!finished || !streams.size) return null;
      c.delta = {};
    }
    const d = c.delta;
    const i = c.index ?? 0;
    const parts = partsOf(i, d);
    let before: Delta | null = null;
    if (streams.size > 0 && parts.some((p) => p.output)) {
      // Held text this delta ends without continuing it comes out first, in a chunk of its own.
      const ended = release(
        i,
        (kind) => !parts.some((p) => continues(kind, p)) && parts.some((p) => interrupts(p, kind)),
      );
      if (ended.length > 0) {
        before = {};
        for (const [kind, rest] of ended) appendHeld(before, kind, rest);
      }
    }
    if (typeof d.content === "string") d.content = stream(`${i}|content`, false).push(d.content);
    for (const field of MODEL_TEXT_FIELDS) {
      const text = d[field];
      if (typeof text === "string") d[field] = stream(`${i}|${field}`, false).push(text);
    }
    const fc = d.function_call as { arguments?: unknown } | null | undefined;
    if (fc && typeof fc.arguments === "string") fc.arguments = stream(`${i}|fc`, true).push(fc.arguments);
    if (Array.isArray(d.tool_calls))
      for (const t of d.tool_calls as DeltaCall[]) {
        if (t.function !== undefined && typeof t.function.arguments === "string")
          t.function.arguments = stream(`${i}|f:${t.index ?? 0}`, true).push(t.function.arguments);
        if (t.custom && typeof t.custom.input === "string")
          t.custom.input = stream(`${i}|u:${t.index ?? 0}`, false).push(t.custom.input);
      }
    if (finished) {
      for (const [kind, rest] of release(i)) appendHeld(d, kind, rest);
    } else if (parts.length > 1) {
      // Within one delta only the Messages and Responses wires give an order: content, then refusal, in one text
      // block, then the tool calls it opens (which close that block). Held text there is released in place.
      const ended = release(i, (kind) => {
        if (kind !== "content" && kind !== "refusal") return false;
        const at = parts.findIndex((p) => p.kind === kind);
        return at >= 0 && parts.slice(at + 1).some((p) => p.output && (p.newCall || p.kind === "refusal"));
      });
      for (const [kind, rest] of ended) appendHeld(d, kind, rest);
    }
    return before;
  }

  return {
    push(chunk) {
      // Azure's first chunk (prompt_filter_results) has no choices and empty ids: not a template.
      if (template === null && chunk.id && chunk.choices.length > 0)
        template = { id: chunk.id, object: chunk.object, created: chunk.created, model: chunk.model };
      if (!Array.isArray(chunk.choices)) return [chunk];
      const before: ChatCompletionChunk["choices"] = [];
      for (const c of chunk.choices) {
        const delta = restoreChoice(c);
        if (delta !== null) before.push({ index: c.index ?? 0, delta, finish_reason: null });
      }
      if (before.length === 0) return [chunk];
      const base = { id: chunk.id, object: chunk.object, created: chunk.created, model: chunk.model };
      return [{ ...base, choices: before }, chunk];
    },
    flush() {
      const indexes = new Set<number>();
      for (const key of streams.keys()) indexes.add(Number(key.slice(0, key.indexOf("|"))));
      const out: ChatCompletionChunk[] = [];
      for (const i of [...indexes].sort((a, b) => a - b)) {
        const held = release(i);
        if (held.length === 0) continue;
        const delta: Delta = {};
        for (const [kind, rest] of held) appendHeld(delta, kind, rest);
        const base = template ?? { id: "", object: "chat.completion.chunk" as const, created: 0, model: "" };
        out.push({ ...base, choices: [{ index: i, delta, finish_reason: null }] });
      }
      return out;
    },
  };
}

/**
 * Restores a whole stream, chunk by chunk: `push` returns the chunks to send now; `end` the text still held, then
 * the usage-only chunk(s), which the upstream sends last and which must stay last.
 */
export interface StreamOrder {
  push(chunk: ChatCompletionChunk): ChatCompletionChunk[];
  end(): ChatCompletionChunk[];
}

export function restoreChunkStream(session: Restorer): StreamOrder {
  const restorer = createChunkRestorer(session);
  const trailing: ChatCompletionChunk[] = [];
  return {
    push(chunk) {
      // Only the usage chunk is held: other choice-less chunks (Azure's prompt_filter_results) keep their place.
      if (chunk.choices.length === 0 && chunk.usage) {
        trailing.push(chunk);
        return [];
      }
      return restorer.push(chunk);
    },
    end: () => [...restorer.flush(), ...trailing],
  };
}

/** A finished stream (a list of chunks) restored through `session`; the chunks are rewritten in place. */
export function restoreChunkList(chunks: ChatCompletionChunk[], session: Restorer): ChatCompletionChunk[] {
  const order = restoreChunkStream(session);
  return [...chunks.flatMap((c) => order.push(c)), ...order.end()];
}

/**
 * Redacts `/v1/embeddings` input irreversibly (an embedding cannot be "restored"): strings and arrays of
 * strings; token arrays (numbers) pass unchanged.
 */
export function scrubEmbeddingInput(
  input: EmbeddingRequest["input"],
  session: PiiSession,
): EmbeddingRequest["input"] {
  if (typeof input === "string") return session.redact(input);
  if (Array.isArray(input) && input.length > 0 && typeof input[0] === "string")
    return (input as string[]).map((s) => (typeof s === "string" ? session.redact(s) : s));
  return input;
}
