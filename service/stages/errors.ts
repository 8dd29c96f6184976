/**
 * The outermost error handler: every failure leaves as `{ "error": { message, type, code, param } }` with the right
 * status (Anthropic's `{ "type": "error", "error": { type, message } }` on POST /v1/messages); 5xx internals are
 * hidden and logged once with the request's logger.
 */
import type { Middleware } from "koa";
import { toProxyError } from "../errors";
import { messagesErrorBody } from "../lib/anthropic-messages";
import { isAnthropicRoute } from "./request-context";
import type { ProxyState } from "../state";

export function createErrorHandler(): Middleware<ProxyState> {
  return async function errorHandler(ctx, next) {
    try {
      await next();
    } catch (error) {
      const e = toProxyError(error);
      const usage = ctx.state.usage;
      if (usage.errorCode === "client_closed_request" || usage.errorCode === "shutdown_timeout") {
        // The connection closed first (the client left, or the shutdown grace ran out; request-context recorded
        // which): what failed after that, the cancelled upstream call included, reached nobody.
        ctx.state.log.debug({ status: e.status, code: e.code }, "request ended after the client left");
        return;
      }
      usage.status = e.status;
      usage.errorCode = e.code;
      if (e.status >= 500) {
        ctx.state.log.error({ err: error, status: e.status, code: e.code }, "request failed");
      } else {
        ctx.state.log.debug({ status: e.status, code: e.code }, "request rejected");
      }
      if (ctx.headerSent || !ctx.writable) return;
      ctx.status = e.status;
      for (const [name, value] of Object.entries(e.headers)) ctx.set(name, value);
      if (isAnthropicRoute(ctx.state.route)) {
        // Where Anthropic's SDKs look for the request id (error.requestID); x-request-id is set for every route.
        ctx.set("request-id", ctx.state.requestId);
        ctx.body = messagesErrorBody(e);
      } else ctx.body = e.toBody();
      ctx.app.emit("proxy-error", e, ctx);
    }
  };
}
