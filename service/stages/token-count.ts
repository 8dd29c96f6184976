/**
 * Token count: prompt tokens with the model's tokenizer, and the completion allowance the rate limiter reserves
 * (max_completion_tokens / max_tokens, or the configured default). Runs twice for chat: before the rate limit
 * (what is reserved) and again after RAG added context, so `max_input_tokens` holds for what is really sent.
 */
import type { Middleware } from "koa";
import type { Config } from "../config";
import { InvalidRequestError } from "../errors";
import { countChatTokens, embeddingInputTokens } from "../lib/tokens";
import type { ProxyState } from "../state";

export interface TokenCountDeps {
  config: Config;
  phase: "initial" | "after-rag";
}

/** Whether anything configured globally consumes prompt-token counts (limits or token budgets). */
export function configNeedsTokenCounts(config: Config): boolean {
  const { key, team } = config.limits;
  return (
    config.contentPolicy.maxInputTokens !== null ||
    config.models.some((m) => m.maxInputTokens !== null) ||
    [key.tokensPerMinute, key.tokensPerDay, team.tokensPerMinute, team.tokensPerDay].some((b) => b !== null)
  );
}

/** Counting costs CPU and the tokenizer's memory: only count when a limit or a token budget will use it. */
function requestNeedsCount(state: ProxyState, configNeeds: boolean): boolean {
  if (configNeeds) return true;
  const p = state.principal;
  if (p?.kind !== "key") return false;
  const overrides = [p.key.limits, p.teamLimits];
  return overrides.some((l) => l !== null && (l.tokensPerMinute !== null || l.tokensPerDay !== null));
}

export function createTokenCount(deps: TokenCountDeps): Middleware<ProxyState> {
  const globalMax = deps.config.contentPolicy.maxInputTokens;
  const configNeeds = configNeedsTokenCounts(deps.config);
  return async function tokenCount(ctx, next) {
    // After RAG only a changed prompt needs a new count.
    if (deps.phase === "after-rag" && (!ctx.state.ragChunks || ctx.state.promptTokens === undefined))
      return next();
    const chat = ctx.state.chat;
    if (chat && deps.phase === "initial") {
      const asked = chat.max_completion_tokens ?? chat.max_tokens ?? null;
      const n = typeof chat.n === "number" && chat.n > 1 ? chat.n : 1;
      ctx.state.completionAllowance = (asked ?? deps.config.limits.defaultCompletionTokens) * n;
    } else if (!chat) {
      ctx.state.completionAllowance = 0;
    }
    if (!requestNeedsCount(ctx.state, configNeeds)) return next();
    const deploymentMax = ctx.state.deployment?.maxInputTokens ?? null;
    const limit = [globalMax, deploymentMax]
      .filter((x): x is number => x !== null)
      .reduce((a, b) => Math.min(a, b), Infinity);
    if (!chat) {
      // Embeddings: the limit is per input (a batch of short texts is not one long prompt).
      const perInput = embeddingInputTokens(ctx.state.embedding!.model, ctx.state.embedding!.input);
      ctx.state.promptTokens = perInput.reduce((a, b) => a + b, 0);
      const over = perInput.findIndex((n) => n > limit);
      if (over >= 0) {
        const which = Array.isArray(ctx.state.embedding!.input) && perInput.length > 1 ? ` ${over}` : "";
        throw new InvalidRequestError(
          `Input${which} has ${perInput[over]} tokens, over the limit of ${limit} an input. Shorten it or split it into several inputs.`,
          "context_length_exceeded",
          "input",
        );
      }
      return next();
    }
    const prompt = countChatTokens(chat);
    ctx.state.promptTokens = prompt;
    if (prompt > limit) {
      // The field the client sent: `messages` (chat, Messages) or `input` (Responses, embeddings).
      const field = chat && ctx.state.route !== "responses" ? "messages" : "input";
      throw new InvalidRequestError(
        `This request has ${prompt} input tokens${deps.phase === "after-rag" ? " (including knowledge-base context)" : ""}, over the limit of ${limit}. Shorten the ${field === "input" ? "input" : "messages"}.`,
        "context_length_exceeded",
        field,
      );
    }
    return next();
  };
}
