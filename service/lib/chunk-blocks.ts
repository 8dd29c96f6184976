/**
 * Chat completion chunks seen as a sequence of output blocks — a text block, one block per tool call — which is how
 * the Anthropic Messages and OpenAI Responses streams are framed. The walker decides when a block opens, grows and
 * closes; each wire format only says what to write at those moments (lib/anthropic-messages.ts,
 * lib/openai-responses.ts).
 *
 * Blocks are numbered in the order they open, and written one after the other: each block's start, deltas and stop
 * come before the next block starts (the Anthropic SDK's stream helpers report a block's events against the last
 * block started, so overlapping blocks are reported as the wrong one). Text opens a block; a new tool call opens a
 * block, closing an open text block. While a tool-call block is being written, the blocks opened after it are held
 * back (with their deltas) and written, each whole, when the stream ends: providers may interleave the argument deltas
 * of parallel calls, even after text, and a tool block can only close once no delta of its call can follow. With
 * OpenAI (calls streamed one after the other) the first call's arguments stream live and the later calls arrive
 * together at the end, which is when the answer is complete in any case. A call is new when its `index` is new, or
 * when it brings an `id` other than the one its index had (some providers send every call as index 0).
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
  finish(
    out: string[],
    reason: string | null,
    usage: ChunkUsage | null,
    stopSequence: string | null,
    seen: StreamStop,
  ): void;
}

/** What else the stream said about how it ended. */
export interface StreamStop {
  /** The provider's own stop reason when a chat finish reason cannot carry it (`anthropic_stop_reason`). */
  providerStop: string | null;
  /** Whether the answer held a refusal. */
  refused: boolean;
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

/** A block opened while a tool block was being written: written whole when the stream ends. */
interface HeldBlock {
  index: number;
  call: { id: string; name: string } | null;
  deltas: string[];
}

export function walkChunks(writer: BlockWriter): ChunkWalker {
  let started = false;
  let next = 0;
  /** The block being written (its events go out as they come), or -1; and whether it is a tool call's. */
  let live = -1;
  let liveIsTool = false;
  /** The text block that text goes to (live or held), or -1. */
  let text = -1;
  /** Blocks held back behind the live tool block, in the order they opened. */
  const held: HeldBlock[] = [];
  const heldByIndex = new Map<number, HeldBlock>();
  /** Chat tool-call index → its block and the call id it had. */
  const tools = new Map<number, { block: number; id: string | undefined }>();
  let reason: string | null = null;
  let stopSequence: string | null = null;
  const seen: StreamStop = { providerStop: null, refused: false };
  let usage: ChunkUsage | null = null;

  const start = (out: string[], id: string | null) => {
    if (started) return;
    started = true;
    writer.start(out, id);
  };
  const closeLive = (out: string[]) => {
    if (live < 0) return;
    writer.close(out, live);
    live = -1;
  };
  /** A new block: live when nothing is being written or only text is (which it ends), else held. */
  const openBlock = (out: string[], call: { id: string; name: string } | null): number => {
    const index = next++;
    if (live >= 0 && liveIsTool) {
      const block = { index, call, deltas: [] };
      held.push(block);
      heldByIndex.set(index, block);
      return index;
    }
    closeLive(out);
    live = index;
    liveIsTool = call !== null;
    if (call) writer.openTool(out, index, call);
    else writer.openText(out, index);
    return index;
  };
  const write = (out: string[], index: number, delta: string) => {
    const block = heldByIndex.get(index);
    if (block) block.deltas.push(delta);
    else if (index !== live) return;
    else if (liveIsTool) writer.toolArguments(out, index, delta);
    else writer.text(out, index, delta);
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
      if (typeof delta.refusal === "string" && delta.refusal !== "") seen.refused = true;
      if (piece !== "") {
        if (text < 0) text = openBlock(out, null);
        write(out, text, piece);
      }
      for (const call of delta.tool_calls ?? []) {
        const key = call.index ?? 0;
        let known = tools.get(key);
        if (
          known === undefined ||
          (call.id !== undefined && known.id !== undefined && call.id !== known.id)
        ) {
          // Text after this call is a new block.
          text = -1;
          const block = openBlock(out, { id: call.id ?? "", name: call.function?.name ?? "" });
          known = { block, id: call.id };
          tools.set(key, known);
        }
        const args = call.function?.arguments;
        if (args) write(out, known.block, args);
      }
      if (choice.finish_reason) reason = choice.finish_reason;
      if (typeof choice.stop_sequence === "string") stopSequence = choice.stop_sequence;
      if (typeof choice.anthropic_stop_reason === "string") seen.providerStop = choice.anthropic_stop_reason;
      return out;
    },
    end() {
      const out: string[] = [];
      start(out, null);
      closeLive(out);
      for (const block of held) {
        if (block.call) writer.openTool(out, block.index, block.call);
        else writer.openText(out, block.index);
        if (block.deltas.length > 0) {
          const all = block.deltas.join("");
          if (block.call) writer.toolArguments(out, block.index, all);
          else writer.text(out, block.index, all);
        }
        writer.close(out, block.index);
      }
      held.length = 0;
      heldByIndex.clear();
      writer.finish(out, reason, usage, stopSequence, seen);
      return out;
    },
  };
}
