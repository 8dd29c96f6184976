/**
 * Content policy: blocked patterns (literals or regexes, compiled once at start by config.ts) checked against
 * every text the provider would see. A match is a 400 `content_policy_violation` with a fixed message that
 * reveals neither the pattern nor the matched text.
 */
import type { Middleware } from "koa";
import { Counter } from "prom-client";
import type { Config } from "../config";
import { ProxyError } from "../errors";
import { registry } from "../metrics";
import type { ProxyState } from "../state";
import type { ChatMessage } from "../types";

const blocked = new Counter({
  name: "llmproxy_content_policy_blocked_total",
  help: "Requests refused by the content policy, by route.",
  labelNames: ["route"] as const,
  registers: [registry],
});

export class ContentPolicyError extends ProxyError {
  constructor() {
    super(
      400,
      "invalid_request_error",
      "content_policy_violation",
      "The request was blocked by the content policy.",
    );
  }
}

/** Every text of a message the provider would see. */
export function* messageTexts(m: ChatMessage): Generator<string> {
  if (typeof m.content === "string") yield m.content;
  else if (Array.isArray(m.content)) {
    for (const part of m.content) if (typeof part.text === "string") yield part.text;
  }
  if (Array.isArray(m.tool_calls)) {
    for (const call of m.tool_calls) if (call.function?.arguments) yield call.function.arguments;
  }
}

export function createContentPolicy(deps: { config: Config }): Middleware<ProxyState> {
  const patterns = deps.config.contentPolicy.blockedPatterns;
  return async function contentPolicy(ctx, next) {
    if (patterns.length) {
      const texts: string[] = [];
      if (ctx.state.chat) for (const m of ctx.state.chat.messages) texts.push(...messageTexts(m));
      const input = ctx.state.embedding?.input;
      if (typeof input === "string") texts.push(input);
      else if (Array.isArray(input)) for (const x of input) if (typeof x === "string") texts.push(x);
      for (const text of texts) {
        for (const re of patterns) {
          re.lastIndex = 0;
          if (re.test(text)) {
            blocked.inc({ route: ctx.state.route });
            throw new ContentPolicyError();
          }
        }
      }
    }
    return next();
  };
}
