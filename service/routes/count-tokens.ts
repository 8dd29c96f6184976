/**
 * POST /v1/messages/count_tokens (Anthropic SDKs, Claude Code): the prompt tokens of a Messages request — the same
 * translation as POST /v1/messages, counted with the proxy's tokenizer (exact for OpenAI models, the documented
 * o200k approximation for others, Claude included). Nothing is sent upstream and no usage row is written.
 */
import type { Middleware } from "koa";
import type { AppDeps } from "../app";
import { messagesToChat, type MessagesRequest } from "../lib/anthropic-messages";
import { countChatTokens } from "../lib/tokens";
import { messagesSchema, readValidBody, requireModelAccess, resolveModel } from "../stages/parse";
import type { ProxyState } from "../state";

/** count_tokens takes a Messages request without max_tokens. */
const countSchema = messagesSchema.extend({ max_tokens: messagesSchema.shape.max_tokens.optional() });

export function createCountTokensRoute(deps: AppDeps): Middleware<ProxyState> {
  return async function countTokens(ctx) {
    const data = await readValidBody(ctx, deps, countSchema);
    const body = { ...data, max_tokens: data.max_tokens ?? 1 } as MessagesRequest;
    const chat = messagesToChat(body);
    requireModelAccess(ctx, resolveModel(deps, chat.model, "chat").name);
    ctx.set("request-id", ctx.state.requestId);
    ctx.body = { input_tokens: countChatTokens(chat) };
  };
}
