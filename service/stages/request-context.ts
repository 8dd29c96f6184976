/**
 * Request context: request id (accepted from `x-request-id` or generated, always echoed), a child logger, the
 * usage row skeleton, and the bookkeeping that happens when the response has really finished — for streams that
 * is after the last byte, not when the middleware chain returns: metrics, and the usage row for every API request
 * made with a known key (success, upstream error, rejection, rate limit, cache hit).
 */
import type { Middleware } from "koa";
import { lineWriter, type Logger } from "../logger";
import { Gauge } from "prom-client";
import { costTotal, registry, requestDuration, requestsTotal, tokensTotal } from "../metrics";
import { costUsd } from "../lib/pricing";
import { uuidv7 } from "../lib/uuid7";
import type { UsageSink } from "../ports";
import type { SpendTracker } from "../adapters/spend";
import type { ProxyState } from "../state";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const USAGE_ROUTES = new Set(["chat", "messages", "responses", "embeddings"]);

let inflight = 0;
/** Requests (including open streams) not yet finished; main.ts waits for 0 when draining. */
/**
 * The request's prompt tokens before the provider reports them: the tokenizer's count when a limit needed one, else
 * its body at 4 bytes a token (a cut stream, an answer without usage, a Messages stream's first event).
 */
export function promptTokensEstimate(ctx: { state: ProxyState; request: { length?: number } }): number {
  return ctx.state.promptTokens ?? Math.ceil((ctx.request.length || 0) / 4);
}

export function inflightCount(): number {
  return inflight;
}

// Read when scraped, not updated twice per request.
new Gauge({
  name: "llmproxy_inflight_requests",
  help: "Requests (including open streams) in flight.",
  registers: [registry],
  collect() {
    this.set(inflight);
  },
});

/** Routes that speak Anthropic's wire format (errors as `{"type": "error", ...}`). */
export function isAnthropicRoute(route: string): boolean {
  return route === "messages" || route === "count_tokens";
}

export function routeOf(path: string): string {
  const route = exactRoute(path);
  if (route !== "other") return route;
  // The router also matches another case and a trailing slash (@koa/router's defaults): the same endpoint, which
  // must get the same usage row, budget and wire format.
  const normal = path.toLowerCase().replace(/\/+$/, "");
  return normal !== path && normal ? exactRoute(normal) : route;
}

function exactRoute(path: string): string {
  if (path === "/v1/chat/completions") return "chat";
  if (path === "/v1/embeddings") return "embeddings";
  if (path === "/v1/messages") return "messages";
  if (path === "/v1/responses") return "responses";
  if (path === "/v1/messages/count_tokens") return "count_tokens";
  if (path === "/v1/models" || path.startsWith("/v1/models/")) return "models";
  if (path.startsWith("/internal/kb")) return "kb";
  if (path.startsWith("/internal")) return "admin";
  if (path === "/healthz" || path === "/readyz") return "health";
  if (path === "/metrics") return "metrics";
  return "other";
}

/**
 * A logger that becomes `parent.child(bindings)` the first time one of its members is used. Most requests only
 * log their final line (written with the root logger and the request id), and a pino child per request is a
 * measurable share of the proxy's CPU; stages can hand this logger around freely without creating it.
 */
function lazyChild(parent: Logger, bindings: Record<string, unknown>): Logger {
  let child: Logger | null = null;
  return new Proxy({} as Logger, {
    get(_target, prop) {
      child ??= parent.child(bindings);
      const value: unknown = Reflect.get(child, prop, child);
      return typeof value === "function" ? value.bind(child) : value;
    },
  });
}

export interface RequestContextDeps {
  log: Logger;
  usageSink: UsageSink;
  isDraining(): boolean;
  /** True once the shutdown grace period ran out: a request ended now was cut by the server, not by its client. */
  isCutOff?(): boolean;
  /** Told each request's cost, so budgets see this process's spend at once. */
  spend?: SpendTracker | null;
  /** Whether `name` is a model of the config (not one the zero-config path passes on). */
  isConfiguredModel?(name: string): boolean;
}

/**
 * The `model` label of a request's metrics. A client writes the model name, so only names with a bounded set label a
 * series: a configured model, or on the zero-config path a name its provider answered; any other name is `other`.
 * Otherwise every made-up name (a typo, a scanner, a 100 KB string) would add a series to /metrics for good.
 */
function modelLabel(model: string | null, status: number, deps: RequestContextDeps): string {
  if (model === null) return "";
  if (deps.isConfiguredModel ? deps.isConfiguredModel(model) : true) return model;
  return status < 400 && model.length <= MAX_MODEL_CHARS ? model : "other";
}

/**
 * Characters of a requested model name kept on the usage row, the access line and a metrics label (no model name is
 * near this long; a client can send any string). Cut when the request is over: answers echo the name whole.
 */
const MAX_MODEL_CHARS = 256;

export function createRequestContext(deps: RequestContextDeps): Middleware<ProxyState> {
  const accessLine = lineWriter(deps.log, "request finished");
  return async function requestContext(ctx, next) {
    const incoming = ctx.get("x-request-id");
    const fromClient = REQUEST_ID.test(incoming);
    const requestId = fromClient ? incoming : uuidv7();
    const route = routeOf(ctx.path);
    ctx.state.requestId = requestId;
    ctx.state.route = route;
    ctx.state.startedAt = performance.now();
    ctx.state.log = lazyChild(deps.log, { requestId, route });
    ctx.state.usage = {
      // The row's key: the request id we generated (so a row and a response correlate), but never a client's own
      // id, which it may reuse.
      requestId: fromClient ? uuidv7() : requestId,
      createdAt: new Date(),
      keyId: null,
      teamId: null,
      route,
      requestedModel: null,
      servedModel: null,
      provider: null,
      promptTokens: 0,
      completionTokens: 0,
      cachedTokens: 0,
      cacheWriteTokens: 0,
      costUsd: null,
      latencyMs: 0,
      status: 0,
      errorCode: null,
      stream: false,
      cacheHit: false,
      piiCounts: null,
    };
    if (deps.isDraining()) ctx.set("Connection", "close");

    inflight++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      inflight--;
      const usage = ctx.state.usage;
      const seconds = (performance.now() - ctx.state.startedAt) / 1e3;
      usage.latencyMs = Math.round(seconds * 1000);
      if (!ctx.res.writableFinished && !usage.errorCode) {
        if (deps.isCutOff?.()) {
          // The shutdown grace period ran out and the server closed the connection: not the client's doing.
          usage.errorCode = "shutdown_timeout";
          if (!ctx.res.headersSent) usage.status = 503;
        } else {
          usage.errorCode = "client_closed_request";
          // Gone before the response began: 499 (what was sent, if a stream's head was, stays the status).
          if (!ctx.res.headersSent) usage.status = 499;
        }
      }
      if (!usage.status) usage.status = ctx.status;
      const { streamed, sentTo } = ctx.state;
      if (!usage.cacheHit && (streamed ? !streamed.reported : sentTo && !ctx.state.result)) {
        // The provider had the request but its usage never reached us — a stream cut before its usage chunk (the
        // client left, or the upstream failed mid-way; content or not), or a client that left before the answer
        // came: the provider bills what it processed, so the row gets an estimate instead of nothing — the prompt
        // as counted (or its body at 4 bytes a token), the answer streamed so far at 4 characters a token — priced
        // at the deployment that had the request.
        usage.promptTokens ||= promptTokensEstimate(ctx);
        usage.completionTokens ||= Math.ceil((streamed?.chars ?? 0) / 4);
        if (sentTo && !ctx.state.served) {
          usage.servedModel ??= sentTo.name;
          usage.provider ??= sentTo.provider;
        }
      }
      if (usage.requestedModel !== null && usage.requestedModel.length > MAX_MODEL_CHARS)
        usage.requestedModel = `${usage.requestedModel.slice(0, MAX_MODEL_CHARS)}…`;
      usage.costUsd = costUsd(usage, ctx.state.served ?? sentTo ?? undefined);
      requestsTotal.inc({
        route,
        status: String(usage.status),
        model: modelLabel(usage.requestedModel, usage.status, deps),
      });
      requestDuration.observe({ route }, seconds);
      if (usage.promptTokens)
        tokensTotal.inc({ direction: "prompt", model: usage.servedModel ?? "" }, usage.promptTokens);
      if (usage.completionTokens) {
        tokensTotal.inc({ direction: "completion", model: usage.servedModel ?? "" }, usage.completionTokens);
      }
      if (usage.costUsd) costTotal.inc({ model: usage.servedModel ?? "" }, usage.costUsd);
      if (USAGE_ROUTES.has(route) && usage.keyId) {
        deps.usageSink.record(usage);
        if (usage.costUsd) deps.spend?.add(usage.keyId, usage.teamId, usage.costUsd);
      }
      // Probes and scrapes every few seconds would drown the log: they log at debug.
      const level = route === "health" || route === "metrics" ? "debug" : "info";
      accessLine(level, {
        requestId,
        route,
        status: usage.status,
        ms: usage.latencyMs,
        model: usage.requestedModel,
        served: usage.servedModel,
        promptTokens: usage.promptTokens,
        completionTokens: usage.completionTokens,
        code: usage.errorCode,
        cache: ctx.state.cacheStatus,
      });
    };
    ctx.res.once("close", finish);
    try {
      await next();
    } finally {
      // On everything Koa writes (errors, admin, models, health); respond.ts sends these in its own head. A header
      // an error set itself (a 429's x-ratelimit-*) wins.
      if (!ctx.res.headersSent) {
        ctx.set("x-request-id", requestId);
        const added = ctx.state.responseHeaders;
        if (added)
          for (let i = 0; i < added.length; i += 2)
            if (!ctx.res.hasHeader(added[i])) ctx.set(added[i], added[i + 1]);
      }
    }
  };
}
