/**
 * The built-in `mock` provider: answers deterministically without any network, for the embedded default, demos
 * and benchmarks. Chat echoes the last user message ("Mock answer: …"); embeddings are a feature-hashed
 * bag of words (256 dimensions, L2-normalised), so similar texts get similar vectors.
 */
import crypto from "node:crypto";
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

export function mockEmbedding(text: string): number[] {
  const v = new Array<number>(MOCK_EMBEDDING_DIMENSIONS).fill(0);
  const words = text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
  for (const w of words) {
    const h = fnv1a(w);
    v[h % MOCK_EMBEDDING_DIMENSIONS] += h & 0x80000000 ? 1 : -1;
  }
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0)) || 1;
  return v.map((x) => x / norm);
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
      const body = req.body as { model: string; input: unknown };
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const texts = inputs.map((x) => (typeof x === "string" ? x : JSON.stringify(x)));
      const tokens = texts.reduce((a, t) => a + approxTokens(t), 0);
      return {
        object: "list",
        data: texts.map((t, index) => ({ object: "embedding", index, embedding: mockEmbedding(t) })),
        model: body.model,
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      };
    },
    async close() {},
  };
}
