/**
 * Chat completion chunks seen as a sequence of output blocks — a text block, one block per tool call — which is how
 * the Anthropic Messages and OpenAI Responses streams are framed. The walker decides when a block opens, grows and
 * closes; each wire format only says what to write at those moments (lib/anthropic-messages.ts,
 * lib/openai-responses.ts).
 *
 * Blocks are numbered in the order they open. Text opens a block; a new tool call opens a block (closing an open
 * text block). Tool-call blocks stay open until the stream ends, because providers may interleave the argument
 * deltas of parallel calls, even after text; deltas go to their call's own block. A call is new when its `index` is
 * new, or when it brings an `id` other than the one its index had (some providers send every call as index 0).
 */
import type { ChatCompletionChunk, Usage } from "../types";

export interface BlockWriter {
  /** Before anything else, once (`id`: the first chunk's id, or null when the stream had no chunk). */
  start(out: string[], id: string | null): void;
  openText(out: string[], index: number): void;
  text(out: string[], index: number, delta: string): void;
  openTool(out: string[], index: number, call: { id: string; name: string }): void;
  toolArguments(out: string[], index: number, delta: string): void;
  close(out: string[], index: number): void;
  /**
   * After the last block closed: the chat finish reason, the usage when the upstream reported it, and the stop
   * sequence that ended the answer when the provider said which (Anthropic does).
   */
  finish(out: string[], reason: string | null, usage: ChunkUsage | null, stopSequence: string | null): void;
}

export interface ChunkUsage {
  input: number;
  output: number;
  /** Prompt tokens served from the provider's prompt cache, and completion tokens spent on reasoning. */
  cached: number;
  reasoning: number;
  /** Prompt tokens written to the provider's prompt cache (Anthropic's cache_creation_input_tokens; priced higher). */
  cacheWrite: number;
  /** Of those, the writes to a 1-hour cache (Anthropic; priced higher still). */
  cacheWrite1h: number;
}

/** A chat usage object (of a completion or of a stream's usage chunk) in the walker's terms. */
/** The most tokens one request is taken to have used: PostgreSQL's integer, far above any model's context. */
export const MAX_REPORTED_TOKENS = 2 ** 31 - 1;

/**
 * A token count the provider reported, bounded: a non-negative number (floored, at most MAX_REPORTED_TOKENS), else
 * undefined. An upstream's `1e300` became a cost PostgreSQL's numeric could not hold (the row was dropped) while the
 * spend and the rate limiter were charged with it.
 */
export function reportedTokens(v: unknown): number | undefined {
  return typeof v === "number" && v >= 0 && !Number.isNaN(v)
    ? Math.min(Math.floor(v), MAX_REPORTED_TOKENS)
    : undefined;
}

export function chatUsage(u: Usage | null | undefined): ChunkUsage {
  const details = u as
    | {
        prompt_tokens_details?: {
          cached_tokens?: number;
          cache_write_tokens?: number;
          cache_write_1h_tokens?: number;
        } | null;
        completion_tokens_details?: { reasoning_tokens?: number } | null;
      }
    | null
    | undefined;
  return {
    input: reportedTokens(u?.prompt_tokens) ?? 0,
    output: reportedTokens(u?.completion_tokens) ?? 0,
    cached: reportedTokens(details?.prompt_tokens_details?.cached_tokens) ?? 0,
    reasoning: reportedTokens(details?.completion_tokens_details?.reasoning_tokens) ?? 0,
    cacheWrite: reportedTokens(details?.prompt_tokens_details?.cache_write_tokens) ?? 0,
    cacheWrite1h: reportedTokens(details?.prompt_tokens_details?.cache_write_1h_tokens) ?? 0,
  };
}

export interface ChunkWalker {
  push(chunk: ChatCompletionChunk): string[];
  end(): string[];
}

export function walkChunks(writer: BlockWriter): ChunkWalker {
  let started = false;
  let next = 0;
  let text = -1;
  /** Chat tool-call index → its block and the call id it had. */
  const tools = new Map<number, { block: number; id: string | undefined }>();
  const open = new Set<number>();
  let reason: string | null = null;
  let stopSequence: string | null = null;
  let usage: ChunkUsage | null = null;

  const start = (out: string[], id: string | null) => {
    if (started) return;
    started = true;
    writer.start(out, id);
  };
  const close = (out: string[], index: number) => {
    writer.close(out, index);
    open.delete(index);
    if (index === text) text = -1;
  };
  const closeAll = (out: string[]) => {
    for (const index of [...open].sort((a, b) => a - b)) close(out, index);
  };
  const openBlock = (): number => {
    const index = next++;
    open.add(index);
    return index;
  };

  return {
    push(chunk) {
      const out: string[] = [];
      start(out, chunk.id);
      if (chunk.usage) usage = chatUsage(chunk.usage);
      const choice = chunk.choices[0];
      if (!choice) return out;
      const delta = choice.delta ?? {};
      // A refusal is text for these formats (neither has a place for a chat refusal mid-stream).
      const piece =
        (typeof delta.content === "string" ? delta.content : "") +
        (typeof delta.refusal === "string" ? delta.refusal : "");
      if (piece !== "") {
        if (text < 0) {
          text = openBlock();
          writer.openText(out, text);
        }
        writer.text(out, text, piece);
      }
      for (const call of delta.tool_calls ?? []) {
        const key = call.index ?? 0;
        let known = tools.get(key);
        if (
          known === undefined ||
          (call.id !== undefined && known.id !== undefined && call.id !== known.id)
        ) {
          if (text >= 0) close(out, text);
          known = { block: openBlock(), id: call.id };
          tools.set(key, known);
          writer.openTool(out, known.block, { id: call.id ?? "", name: call.function?.name ?? "" });
        }
        const args = call.function?.arguments;
        if (args) writer.toolArguments(out, known.block, args);
      }
      if (choice.finish_reason) reason = choice.finish_reason;
      if (typeof choice.stop_sequence === "string") stopSequence = choice.stop_sequence;
      return out;
    },
    end() {
      const out: string[] = [];
      start(out, null);
      closeAll(out);
      writer.finish(out, reason, usage, stopSequence);
      return out;
    },
  };
}
