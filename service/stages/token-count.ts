/**
 * Token count: prompt tokens with the model's tokenizer, and the completion allowance the rate limiter reserves
 * (max_completion_tokens / max_tokens, or the configured default). Runs twice for chat: before the rate limit
 * (what is reserved) and again after RAG added context, so `max_input_tokens` holds for what is really sent.
 */
import type { Middleware } from "koa";
import type { Config } from "../config";
import { InvalidRequestError } from "../errors";
import { countChatTokens, countEmbeddingTokens } from "../lib/tokens";
import type { ProxyState } from "../state";

export interface TokenCountDeps {
  config: Config;
  phase: "initial" | "after-rag";
}

export function createTokenCount(deps: TokenCountDeps): Middleware<ProxyState> {
  const globalMax = deps.config.contentPolicy.maxInputTokens;
  return async function tokenCount(ctx, next) {
    // After RAG only a changed prompt needs a new count.
    if (deps.phase === "after-rag" && !ctx.state.ragChunks) return next();
    const chat = ctx.state.chat;
    const prompt = chat
      ? countChatTokens(chat)
      : countEmbeddingTokens(ctx.state.embedding!.model, ctx.state.embedding!.input);
    ctx.state.promptTokens = prompt;
    const deploymentMax = ctx.state.deployment?.maxInputTokens ?? null;
    const limit = [globalMax, deploymentMax]
      .filter((x): x is number => x !== null)
      .reduce((a, b) => Math.min(a, b), Infinity);
    if (prompt > limit) {
      throw new InvalidRequestError(
        `This request has ${prompt} input tokens${deps.phase === "after-rag" ? " (including knowledge-base context)" : ""}, over the limit of ${limit}. Shorten the messages.`,
        "context_length_exceeded",
        "messages",
      );
    }
    if (chat && deps.phase === "initial") {
      const asked = chat.max_completion_tokens ?? chat.max_tokens ?? null;
      const n = typeof chat.n === "number" && chat.n > 1 ? chat.n : 1;
      ctx.state.completionAllowance = (asked ?? deps.config.limits.defaultCompletionTokens) * n;
    } else if (!chat) {
      ctx.state.completionAllowance = 0;
    }
    return next();
  };
}
