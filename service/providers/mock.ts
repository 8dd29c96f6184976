/**
 * The built-in `mock` provider: answers deterministically without any network, for the embedded default, demos
 * and benchmarks. Chat echoes the last user message ("Mock answer: …"); embeddings are a feature-hashed
 * bag of words (256 dimensions, L2-normalised), so similar texts get similar vectors. Embeddings follow OpenAI's
 * wire format: `input` is a string, a list of strings, a list of token ids (ONE input) or a list of token-id lists,
 * and `encoding_format: "base64"` (what the official SDKs ask for by default) answers each vector as the base64 of
 * its little-endian float32 bytes.
 */
import crypto from "node:crypto";
import { InvalidRequestError } from "../errors";
import { delay } from "../lib/cancel";
import type { ProviderConfig } from "../config";
import type { Provider, UpstreamChatResult } from "../ports";
import type { ChatCompletion, ChatCompletionChunk, ChatMessage, EmbeddingResponse } from "../types";

type MockConfig = Extract<ProviderConfig, { type: "mock" }>;
export const MOCK_EMBEDDING_DIMENSIONS = 256;

function textOf(message: ChatMessage | undefined): string {
  if (!message) return "";
  if (typeof message.content === "string") return message.content;
  if (Array.isArray(message.content)) {
    return message.content.map((p) => (typeof p.text === "string" ? p.text : "")).join(" ");
  }
  return "";
}

/** Rough token estimate for the mock (≈ 4 characters per token). */
function approxTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Feature hashing of `features` into MOCK_EMBEDDING_DIMENSIONS, L2-normalised; every value is a float32 (as a real
 * model's), so the float and base64 encodings of a vector carry the same numbers.
 */
function hashedVector(features: string[]): number[] {
  const v = new Array<number>(MOCK_EMBEDDING_DIMENSIONS).fill(0);
  for (const f of features) {
    const h = fnv1a(f);
    v[h % MOCK_EMBEDDING_DIMENSIONS] += h & 0x80000000 ? 1 : -1;
  }
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0)) || 1;
  return v.map((x) => Math.fround(x / norm));
}

/** The mock embedding of a text: its bag of (lower-cased) words. */
export function mockEmbedding(text: string): number[] {
  return hashedVector(text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []);
}

/** The mock embedding of one pre-tokenised input: its bag of token ids (not the same vector as any text's). */
export function mockTokenEmbedding(tokens: readonly number[]): number[] {
  return hashedVector(tokens.map((t) => `\u0000${t}`));
}

/** OpenAI's `encoding_format: "base64"`: the vector's little-endian float32 bytes, base64-encoded. */
export function embeddingToBase64(vector: readonly number[]): string {
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((x, i) => bytes.writeFloatLE(x, i * 4));
  return bytes.toString("base64");
}

type MockInput = { text: string } | { tokens: number[] };

const isTokenId = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x);

/**
 * The inputs of an embeddings request as OpenAI reads `input`: a string is one input, a list of token ids is ONE
 * (pre-tokenised) input, and a list of strings or of token-id lists is one input per item.
 */
function mockInputs(input: unknown): MockInput[] {
  if (typeof input === "string") return [{ text: input }];
  if (Array.isArray(input) && input.length > 0 && input.every(isTokenId)) return [{ tokens: input }];
  return (Array.isArray(input) ? input : [input]).map((x): MockInput => {
    if (typeof x === "string") return { text: x };
    if (Array.isArray(x) && x.every(isTokenId)) return { tokens: x };
    return { text: JSON.stringify(x) ?? "" };
  });
}

export function createMockProvider(cfg: MockConfig): Provider {
  return {
    name: cfg.name,
    type: "mock",
    async chat(req): Promise<UpstreamChatResult> {
      const body = req.body as {
        model: string;
        messages: ChatMessage[];
        stream?: boolean;
        stream_options?: { include_usage?: boolean };
      };
      if (cfg.latencyMs) await delay(cfg.latencyMs, req.signal);
      const lastUser = [...body.messages].reverse().find((m) => m.role === "user");
      const content = `Mock answer: ${textOf(lastUser)}`;
      const promptTokens = approxTokens(body.messages.map(textOf).join("\n"));
      const completionTokens = approxTokens(content);
      const id = `chatcmpl-mock-${crypto.randomUUID()}`;
      const created = Math.floor(Date.now() / 1000);
      const usage = {
        prompt_tokens: promptTokens,
        completion_tokens: completionTokens,
        total_tokens: promptTokens + completionTokens,
      };
      if (!body.stream) {
        const completion: ChatCompletion = {
          id,
          object: "chat.completion",
          created,
          model: body.model,
          choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
          usage,
        };
        return { kind: "json", body: completion };
      }
      const pieces = content.match(/\S+\s*/g) ?? [content];
      async function* chunks(): AsyncGenerator<ChatCompletionChunk> {
        const base = { id, object: "chat.completion.chunk" as const, created, model: body.model };
        yield {
          ...base,
          choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }],
        };
        for (const piece of pieces) {
          yield { ...base, choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] };
        }
        yield { ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] };
        if (body.stream_options?.include_usage) yield { ...base, choices: [], usage };
      }
      return { kind: "stream", chunks: chunks() };
    },
    async embeddings(req): Promise<EmbeddingResponse> {
      const body = req.body as { model: string; input: unknown; encoding_format?: unknown };
      const format = body.encoding_format ?? "float";
      if (format !== "float" && format !== "base64") {
        throw new InvalidRequestError(
          `Invalid value for \`encoding_format\`: ${JSON.stringify(format)}; supported values are "float" and "base64".`,
          "invalid_value",
          "encoding_format",
        );
      }
      const inputs = mockInputs(body.input);
      let tokens = 0;
      const data = inputs.map((x, index) => {
        tokens += "tokens" in x ? x.tokens.length : approxTokens(x.text);
        const vector = "tokens" in x ? mockTokenEmbedding(x.tokens) : mockEmbedding(x.text);
        return {
          object: "embedding" as const,
          index,
          embedding: format === "base64" ? embeddingToBase64(vector) : vector,
        };
      });
      return {
        object: "list",
        data,
        model: body.model,
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      };
    },
    async close() {},
  };
}
