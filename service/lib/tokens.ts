/**
 * Prompt token counting with the model's tokenizer (gpt-tokenizer, pure JS, offline):
 * o200k_base for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, the o-series and anything newer; cl100k_base for gpt-4 (non-o),
 * gpt-3.5 and the text-embedding models. Models of other providers (Claude, Llama, Mistral, …) are counted with
 * o200k_base as an approximation: modern BPE vocabularies land within roughly ±15% of it on English text.
 * Chat framing follows OpenAI's accounting: 3 tokens per message plus 3 to prime the reply; an image part counts
 * as 85 tokens (low detail), since its real cost depends on pixels the proxy does not decode.
 */
import { digestMemo } from "./digest-memo";
import type { ChatCompletionRequest, ChatMessage } from "../types";

export type Encoding = "o200k_base" | "cl100k_base";

type CountTokens = (text: string) => number;
const counters: Partial<Record<Encoding, CountTokens>> = {};

/**
 * The encoding tables are large (o200k ≈ 67 MB of heap, cl100k ≈ 18 MB, ~0.5 s to load), so each is loaded the
 * first time something needs it; `preloadEncoding` loads one at start when the config is known to need it.
 */
function counter(encoding: Encoding): CountTokens {
  let count = counters[encoding];
  if (!count) {
    // A synchronous, on-demand load is the point here; a static import would load both tables in every process.
    /* eslint-disable @typescript-eslint/no-require-imports */
    count =
      encoding === "cl100k_base"
        ? (
            require("gpt-tokenizer/encoding/cl100k_base") as typeof import("gpt-tokenizer/encoding/cl100k_base")
          ).countTokens
        : (require("gpt-tokenizer/encoding/o200k_base") as typeof import("gpt-tokenizer/encoding/o200k_base"))
            .countTokens;
    /* eslint-enable @typescript-eslint/no-require-imports */
    counters[encoding] = count;
  }
  return count;
}

export function preloadEncoding(encoding: Encoding): void {
  counter(encoding)("");
}

const CL100K = /^(gpt-4(?!o|\.|-?5)|gpt-3\.5|text-embedding-(3|ada)|davinci|babbage)/;

export function encodingFor(model: string): Encoding {
  const name = model.includes("/") ? model.slice(model.lastIndexOf("/") + 1) : model;
  return CL100K.test(name) ? "cl100k_base" : "o200k_base";
}

/**
 * Counts of longer texts, keyed by the SHA-1 of the text (the cache holds no prompt text). System prompts and the
 * earlier turns of a conversation come back with every request, and tokenizing them again is most of the cost of
 * counting: ~80 µs for 2 000 characters, against ~2 µs to hash them. Short texts are cheaper to count than to hash.
 */
const CACHE_MIN_CHARS = 128;
const counts = digestMemo<number>(20_000);

export function countText(text: string, encoding: Encoding): number {
  if (!text) return 0;
  const count = counter(encoding);
  return text.length < CACHE_MIN_CHARS ? count(text) : counts.get(text, count, encoding);
}

const PER_MESSAGE = 3;
const REPLY_PRIMING = 3;
const IMAGE_PART = 85;

function messageTokens(m: ChatMessage, enc: Encoding): number {
  let n = PER_MESSAGE + countText(m.role, enc);
  if (typeof m.content === "string") n += countText(m.content, enc);
  else if (Array.isArray(m.content)) {
    for (const part of m.content) {
      if (typeof part.text === "string") n += countText(part.text, enc);
      else if (part.type === "image_url" || part.type === "input_image") n += IMAGE_PART;
    }
  }
  if (m.name) n += 1 + countText(m.name, enc);
  if (Array.isArray(m.tool_calls)) {
    for (const call of m.tool_calls) {
      n += countText(call.function?.name ?? "", enc) + countText(call.function?.arguments ?? "", enc) + 3;
    }
  }
  return n;
}

/** Prompt tokens of a chat request (messages, tool definitions). */
export function countChatTokens(body: ChatCompletionRequest): number {
  const enc = encodingFor(body.model);
  let n = REPLY_PRIMING;
  for (const m of body.messages) n += messageTokens(m, enc);
  if (Array.isArray(body.tools) && body.tools.length) n += countText(JSON.stringify(body.tools), enc);
  return n;
}

/** Tokens of an embeddings input (token arrays count as their length). */
export function countEmbeddingTokens(model: string, input: unknown): number {
  const enc = encodingFor(model);
  if (typeof input === "string") return countText(input, enc);
  if (!Array.isArray(input)) return 0;
  let n = 0;
  for (const item of input) {
    if (typeof item === "string") n += countText(item, enc);
    else if (typeof item === "number") n += 1;
    else if (Array.isArray(item)) n += item.length;
  }
  return n;
}
