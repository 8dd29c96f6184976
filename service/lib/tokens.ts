/**
 * Prompt token counting with the model's tokenizer (gpt-tokenizer, pure JS, offline):
 * o200k_base for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, the o-series and anything newer; cl100k_base for gpt-4 (non-o),
 * gpt-3.5 and the text-embedding models. Models of other providers (Claude, Llama, Mistral, …) are counted with
 * o200k_base as an approximation: modern BPE vocabularies land within roughly ±15% of it on English text.
 * Chat framing follows OpenAI's accounting: 3 tokens per message plus 3 to prime the reply; an image part counts
 * as 85 tokens (low detail), since its real cost depends on pixels the proxy does not decode. Tool and function
 * definitions and a json_schema response format count as their JSON text (the provider renders them into the prompt).
 */
import { digestMemo } from "./digest-memo";
import { MODEL_TEXT_FIELDS, type ChatCompletionRequest, type ChatMessage, type ContentPart } from "../types";

export type Encoding = "o200k_base" | "cl100k_base";

type CountTokens = (text: string) => number;
const counters: Partial<Record<Encoding, CountTokens>> = {};

/** What the counter uses of gpt-tokenizer's encoder (its BytePairEncodingCore); checked when an encoding loads. */
interface BpeCore {
  tokenSplitRegex: RegExp;
  bytePairStringRankEncoder: Map<string, number>;
  bytePairEncode(piece: string): number[];
}

interface LoadedEncoding {
  countTokens(text: string, options: { disallowedSpecial: Set<string> }): number;
  decode(tokens: number[]): string;
  bytePairEncodingCoreProcessor?: Partial<BpeCore>;
}

/** Special-token spellings in a prompt are plain text to the provider (gpt-tokenizer's default throws on them). */
const PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

/**
 * Longest piece merged whole, in UTF-16 units. gpt-tokenizer's merge is quadratic in a piece's length, and one
 * piece can be as long as the text (a run of letters, spaces or an unbroken blob): 100,000 "é" took 13 s, blocking
 * the worker. A longer piece is counted in slices of this length, cut at code-point boundaries, in linear time:
 * exact up to here, and beyond it within about one token per slice either way (merges across a cut are lost, and
 * BPE's greedy merging may also come out a token shorter), a fraction of a percent on such texts.
 */
export const MAX_PIECE = 128;

/** Vocabulary pieces remembered in the small map; cleared when full (the common words come back at once). */
const HOT_PIECES = 8192;
/** V8 copies substrings shorter than this; longer ones may keep the whole prompt alive, so they are not remembered. */
const COPIED_BELOW = 13;

/**
 * Counts what gpt-tokenizer's `countTokens` counts for plain text (tested equal), faster on a busy process, and without its
 * special-token check: `countTokens` throws on text containing `<|endoftext|>` and the like, which a prompt may
 * contain and the provider reads as plain text.
 *
 * The cost of counting a fresh prompt is not the arithmetic but memory: each piece is looked up in a Map of ~200,000
 * vocabulary strings (several MB), and on a proxy whose caches the rest of the request has just filled, nearly every
 * lookup misses the CPU cache (~60 µs for a 230-character prompt there, against ~6 µs in a loop). The pieces of real
 * text are mostly common words, so a small map of the vocabulary pieces seen lately (a few hundred KB, which stays
 * cached) answers most of them. It only holds vocabulary strings (public), short enough to be copies, never a
 * prompt's other text; pieces outside the vocabulary go to the library's merge (with its own bounded cache).
 */
function fastCounter(encoding: LoadedEncoding): CountTokens {
  const core = encoding.bytePairEncodingCoreProcessor;
  if (
    !(core?.tokenSplitRegex instanceof RegExp) ||
    !core.tokenSplitRegex.global ||
    !(core.bytePairStringRankEncoder instanceof Map) ||
    typeof core.bytePairEncode !== "function"
  ) {
    return (text) => encoding.countTokens(text, PLAIN_TEXT);
  }
  const { bytePairStringRankEncoder: ranks } = core;
  const merge = core.bytePairEncode.bind(core);
  // An own copy: `matchAll` clones the regex on every call.
  const split = new RegExp(core.tokenSplitRegex.source, core.tokenSplitRegex.flags);
  const hot = new Map<string, 1>();
  return (text) => {
    let n = 0;
    split.lastIndex = 0;
    for (let m = split.exec(text); m !== null; m = split.exec(text)) {
      const piece = m[0];
      if (piece.length === 0) {
        split.lastIndex++;
        continue;
      }
      if (hot.has(piece)) n++;
      else if (ranks.has(piece)) {
        n++;
        if (piece.length < COPIED_BELOW) {
          if (hot.size >= HOT_PIECES) hot.clear();
          hot.set(piece, 1);
        }
      } else if (piece.length <= MAX_PIECE) n += merge(piece).length;
      else n += countLongPiece(piece, merge);
    }
    return n;
  };
}

function countLongPiece(piece: string, merge: (slice: string) => number[]): number {
  let n = 0;
  for (let start = 0; start < piece.length;) {
    let end = Math.min(start + MAX_PIECE, piece.length);
    // Never split a surrogate pair: end before a low surrogate.
    if (end < piece.length && (piece.charCodeAt(end) & 0xfc00) === 0xdc00) end--;
    n += merge(piece.slice(start, end)).length;
    start = end;
  }
  return n;
}

/**
 * The encoding tables are large (o200k ≈ 67 MB of heap, cl100k ≈ 18 MB, ~0.5 s to load), so each is loaded the
 * first time something needs it; `preloadEncoding` loads one at start when the config is known to need it.
 */
function loadEncoding(encoding: Encoding): LoadedEncoding {
  // A synchronous, on-demand load is the point here; a static import would load both tables in every process.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const loaded =
    encoding === "cl100k_base"
      ? (require("gpt-tokenizer/encoding/cl100k_base") as typeof import("gpt-tokenizer/encoding/cl100k_base"))
          .default
      : (require("gpt-tokenizer/encoding/o200k_base") as typeof import("gpt-tokenizer/encoding/o200k_base"))
          .default;
  /* eslint-enable @typescript-eslint/no-require-imports */
  return loaded as unknown as LoadedEncoding;
}

function counter(encoding: Encoding): CountTokens {
  let count = counters[encoding];
  if (!count) {
    count = fastCounter(loadEncoding(encoding));
    counters[encoding] = count;
  }
  return count;
}

/** gpt-tokenizer's own count of a text as plain text (special-token spellings included): the reference. */
export function libraryCount(text: string, encoding: Encoding): number {
  return loadEncoding(encoding).countTokens(text, PLAIN_TEXT);
}

/** OpenAI's embedding models, whose tokenizer is known exactly (cl100k_base): their token ids decode to the text. */
const EXACT_EMBEDDING_ENCODING = /^text-embedding-(3-small|3-large|ada-002)$/;

/**
 * Token ids as the text they encode, when `model`'s tokenizer is known exactly (OpenAI's embedding models); null
 * otherwise, or when an id is not in the vocabulary.
 */
export function decodeTokens(model: string, tokens: number[]): string | null {
  const name = baseName(model);
  if (!EXACT_EMBEDDING_ENCODING.test(name)) return null;
  try {
    return loadEncoding("cl100k_base").decode(tokens);
  } catch {
    return null;
  }
}

export function preloadEncoding(encoding: Encoding): void {
  counter(encoding)("");
}

/** A model's own name, without a provider or org prefix (`openai/text-embedding-3-small`). */
const baseName = (model: string) => model.slice(model.lastIndexOf("/") + 1);

const CL100K = /^(gpt-4(?!o|\.|-?5)|gpt-3\.5|text-embedding-(3|ada)|davinci|babbage)/;

export function encodingFor(model: string): Encoding {
  const name = baseName(model);
  return CL100K.test(name) ? "cl100k_base" : "o200k_base";
}

/**
 * Counts of longer texts, keyed by the SHA-1 of the text (the cache holds no prompt text). System prompts and the
 * earlier turns of a conversation come back with every request, and tokenizing them again is most of the cost of
 * counting: ~80 µs for 2 000 characters, against ~2 µs to hash them. Short texts are cheaper to count than to hash.
 */
const CACHE_MIN_CHARS = 128;
const counts = digestMemo<number>(20_000);

/** The count of `text` without the memo: for many distinct pieces (chunking a document), which would only evict. */
export function countPlain(text: string, encoding: Encoding): number {
  return text ? counter(encoding)(text) : 0;
}

export function countText(text: string, encoding: Encoding): number {
  if (!text) return 0;
  const count = counter(encoding);
  return text.length < CACHE_MIN_CHARS ? count(text) : counts.get(text, count, encoding);
}

const PER_MESSAGE = 3;
const REPLY_PRIMING = 3;
const IMAGE_PART = 85;
const PER_CALL = 3;

/** A `content` (a string or parts): text and refusal parts as text, an image as IMAGE_PART. */
function contentTokens(content: unknown, enc: Encoding): number {
  if (typeof content === "string") return countText(content, enc);
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const part of content as Array<Partial<ContentPart> | null>) {
    if (typeof part?.text === "string") n += countText(part.text, enc);
    else if (typeof part?.refusal === "string") n += countText(part.refusal, enc);
    else if (part?.type === "image_url" || part?.type === "input_image") n += IMAGE_PART;
  }
  return n;
}

/** A call's name and text: a function's `arguments`, a custom tool's `input`. */
function callTokens(call: { name?: unknown; arguments?: unknown; input?: unknown }, enc: Encoding): number {
  const text = typeof call.arguments === "string" ? call.arguments : call.input;
  return (
    PER_CALL +
    (typeof call.name === "string" ? countText(call.name, enc) : 0) +
    (typeof text === "string" ? countText(text, enc) : 0)
  );
}

/**
 * A definition the provider renders into the prompt (a tool, a JSON schema), as its JSON text: close to what the
 * model reads, and a repeated definition is one memo lookup.
 */
function jsonTokens(value: unknown, enc: Encoding): number {
  return value === undefined || value === null ? 0 : countText(JSON.stringify(value) ?? "", enc);
}

type Loose = Record<string, unknown> | null | undefined;

function messageTokens(m: ChatMessage, enc: Encoding): number {
  let n = PER_MESSAGE + countText(m.role, enc) + contentTokens(m.content, enc);
  for (const field of MODEL_TEXT_FIELDS) {
    const text = m[field];
    if (typeof text === "string") n += countText(text, enc);
  }
  if (m.name) n += 1 + countText(m.name, enc);
  if (Array.isArray(m.tool_calls)) {
    for (const call of m.tool_calls) {
      const fn = (call?.function ?? call?.custom) as Loose;
      n += fn ? callTokens(fn, enc) : PER_CALL;
    }
  }
  const legacy = m.function_call as Loose;
  if (typeof legacy === "object" && legacy !== null) n += callTokens(legacy, enc);
  return n;
}

/**
 * Prompt tokens of a chat request: its messages (content, refusals, reasoning, tool and function calls), tool and
 * function definitions, the predicted output and a json_schema response format. Ids (`tool_call_id`) and `tool_choice`
 * are left out: short, and part of the framing the per-message and per-call allowances stand for.
 */
export function countChatTokens(body: ChatCompletionRequest): number {
  const enc = encodingFor(body.model);
  let n = REPLY_PRIMING;
  for (const m of body.messages) n += messageTokens(m, enc);
  // One definition at a time: agents send the same tools in changing sets, and each stays one memo entry.
  for (const definitions of [body.tools, body.functions])
    if (Array.isArray(definitions)) for (const d of definitions as unknown[]) n += jsonTokens(d, enc);
  const prediction = body.prediction as Loose;
  if (typeof prediction === "object" && prediction !== null) n += contentTokens(prediction.content, enc);
  const format = body.response_format as Loose;
  if (typeof format === "object" && format !== null) n += jsonTokens(format.json_schema, enc);
  return n;
}

/** Tokens of an embeddings input (token arrays count as their length). */
/**
 * Tokens of each embedding input (a text, a list of texts, a list of token ids — one input — or a list of token-id
 * lists): providers limit each input on its own (OpenAI: 8,192 tokens an input), not their sum.
 */
export function embeddingInputTokens(model: string, input: unknown): number[] {
  const enc = encodingFor(model);
  if (typeof input === "string") return [countText(input, enc)];
  if (!Array.isArray(input)) return [];
  if (input.length > 0 && input.every((item) => typeof item === "number")) return [input.length];
  return input.map((item) =>
    typeof item === "string" ? countText(item, enc) : Array.isArray(item) ? item.length : 0,
  );
}
