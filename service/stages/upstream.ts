/**
 * The upstream call: the deployment and then its fallbacks, each with bounded retries and jittered exponential
 * backoff. Retry/fall back on connection errors, timeouts, 429 and 5xx; a provider's 4xx goes straight back.
 * A stream is committed once its first event arrived; after that there is no fallback (the client already has
 * bytes), and a failure ends the stream with an error event (see respond.ts).
 * Streams always ask the upstream for `stream_options.include_usage`, so usage is known for every request.
 */
import type { ServerResponse } from "node:http";
import type { Middleware } from "koa";
import type { Config, DeploymentConfig } from "../config";
import { ClientClosedError } from "../errors";
import { Cancellation, delay } from "../lib/cancel";
import { chatUsage, reportedTokens } from "../lib/chunk-blocks";
import { upstreamAttempts, upstreamDuration } from "../metrics";
import type { UsageRow } from "../ports";
import { ProviderFailure } from "../providers/errors";
import { receivedText } from "../providers/http";
import type { ProviderRegistry } from "../providers/registry";
import type { ProxyState } from "../state";
import {
  MODEL_TEXT_FIELDS,
  type ChatCompletion,
  type ChatCompletionChunk,
  type EmbeddingResponse,
  type Usage,
} from "../types";
import { promptTokensEstimate } from "./request-context";

const BACKOFF_BASE_MS = 100;
const BACKOFF_CAP_MS = 2_000;

/** Full-jitter exponential backoff; a Retry-After longer than the cap means: move on to the fallback instead. */
/**
 * The `model` label of the upstream metrics: a configured deployment's name; on the zero-config path (a name the
 * client made up) the name only when the provider served it and it is of a sane length, else "other" — every
 * made-up name would otherwise add histogram series for good (as /metrics' request counter already avoids).
 */
function metricModel(deployment: DeploymentConfig, served: boolean): string {
  if (!deployment.passthrough) return deployment.name;
  return served && deployment.name.length <= 256 ? deployment.name : "other";
}

export function backoffMs(attempt: number, retryAfterMs: number | null, random = Math.random): number | null {
  if (retryAfterMs !== null) return retryAfterMs <= BACKOFF_CAP_MS ? retryAfterMs : null;
  return Math.round(random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1)));
}

export interface UpstreamDeps {
  config: Config;
  providers: ProviderRegistry;
}

/** The provider's prompt-cache reads and writes (a part of the prompt tokens), onto the usage row. */
function recordPromptCache(usage: UsageRow, reported: Usage | null | undefined): void {
  const u = chatUsage(reported);
  usage.cachedTokens = u.cached;
  usage.cacheWriteTokens = u.cacheWrite;
  usage.cacheWrite1hTokens = u.cacheWrite1h;
}

/**
 * Record the provider's usage as the chunks flow past, and how much answer text went by (for a cut stream). A stream
 * that ends without a usage chunk (a server that ignores `stream_options.include_usage`) gets the estimate of a JSON
 * answer without usage: the prompt's estimate and the answer at 4 characters a token.
 */
async function* meter(
  chunks: AsyncIterable<ChatCompletionChunk>,
  usage: UsageRow,
  streamed: { chars: number; reported: boolean },
  promptEstimate: () => number,
  /** Called when the upstream fails mid-stream (not when the client leaves). */
  failed?: () => void,
): AsyncGenerator<ChatCompletionChunk> {
  try {
    for await (const chunk of chunks) {
      for (const choice of chunk.choices ?? []) {
        const delta = choice.delta;
        if (typeof delta?.content === "string") streamed.chars += delta.content.length;
        for (const call of delta?.tool_calls ?? []) streamed.chars += call.function?.arguments?.length ?? 0;
      }
      if (chunk.usage) {
        streamed.reported = true;
        usage.promptTokens = reportedTokens(chunk.usage.prompt_tokens) ?? usage.promptTokens;
        usage.completionTokens = reportedTokens(chunk.usage.completion_tokens) ?? usage.completionTokens;
        recordPromptCache(usage, chunk.usage);
      }
      yield chunk;
    }
    if (!streamed.reported) {
      usage.promptTokens = promptEstimate();
      usage.completionTokens = Math.ceil(streamed.chars / 4);
    }
  } catch (error) {
    // The client leaving returns the generator (no error here); an error is the upstream failing.
    failed?.();
    throw error;
  }
}

const clientClosed = () => new ClientClosedError();

/** Fires when the client goes away before the response has finished. */
function clientAbort(res: ServerResponse): Cancellation {
  const cancellation = new Cancellation();
  res.once("close", () => {
    if (!res.writableFinished) cancellation.abort();
  });
  return cancellation;
}

/**
 * Try each deployment of the chain with retries; returns what `call` returned, or throws the last client error.
 * Keeps `state.sentTo`: the deployment an attempt is sent to, null once it failed (a failed attempt is not billed).
 */
async function withFallbacks<T>(
  deps: UpstreamDeps,
  chain: DeploymentConfig[],
  signal: Cancellation,
  call: (deployment: DeploymentConfig) => Promise<T>,
  state: ProxyState,
): Promise<{ value: T; deployment: DeploymentConfig }> {
  let last: ProviderFailure | null = null;
  for (let i = 0; i < chain.length; i++) {
    const deployment = chain[i];
    const pcfg = deps.config.providers[deployment.provider];
    // A target of a load-balanced pool is not retried, the next target is the better retry; the pool's last target
    // keeps its provider's retries, so a pool whose targets all failed briefly waits and tries again as one would.
    const lastOfPool = !deployment.pool || chain[i + 1]?.name !== deployment.name;
    const retries = pcfg && "maxRetries" in pcfg && lastOfPool ? pcfg.maxRetries : 0;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0 && last) {
        const wait = backoffMs(attempt, last.retryAfterMs);
        if (wait === null) break;
        await delay(wait, signal).catch(() => undefined);
      }
      if (signal.aborted) throw clientClosed();
      const started = performance.now();
      const { provider } = deployment;
      state.sentTo = deployment;
      try {
        const value = await call(deployment);
        if (deployment.pool) deps.providers.outcome?.(deployment, null, started);
        // Label objects are written out whole: a spread plus one more key takes V8's slow path, every request.
        const model = metricModel(deployment, true);
        upstreamDuration.observe({ provider, model, outcome: "ok" }, (performance.now() - started) / 1e3);
        upstreamAttempts.inc({ provider, model, outcome: "ok" });
        return { value, deployment };
      } catch (error) {
        // The client went away and the call was cancelled for it: that is the outcome, not an upstream failure (the
        // provider had the request: sentTo stays set).
        if (signal.aborted) throw clientClosed();
        state.sentTo = null;
        if (!(error instanceof ProviderFailure)) throw error;
        last = error;
        // In a pool, a target whose own setup failed (credentials, model name) is skipped like one that is down.
        const skipTarget = Boolean(deployment.pool) && error.targetFault;
        if (deployment.pool && (error.retryable || skipTarget)) {
          deps.providers.outcome?.(deployment, { retryAfterMs: error.retryAfterMs });
        }
        const model = metricModel(deployment, false);
        upstreamDuration.observe({ provider, model, outcome: "error" }, (performance.now() - started) / 1e3);
        upstreamAttempts.inc({ provider, model, outcome: error.retryable ? "retryable_error" : "error" });
        state.log.warn(
          { provider: deployment.provider, model: deployment.name, attempt, failure: error.message },
          "upstream attempt failed",
        );
        if (skipTarget) break;
        if (!error.retryable) throw error.clientError;
      }
    }
  }
  throw last!.clientError;
}

/** Characters of model text in a chat completion: content, refusals, reasoning and tool-call arguments. */
function answerChars(body: ChatCompletion): number {
  let chars = 0;
  for (const c of Array.isArray(body.choices) ? body.choices : []) {
    const m = c?.message;
    if (!m) continue;
    if (typeof m.content === "string") chars += m.content.length;
    else if (Array.isArray(m.content))
      for (const p of m.content) if (typeof p?.text === "string") chars += p.text.length;
    for (const field of MODEL_TEXT_FIELDS) {
      const text = m[field];
      if (typeof text === "string") chars += text.length;
    }
    if (Array.isArray(m.tool_calls))
      for (const t of m.tool_calls) {
        if (typeof t?.function?.arguments === "string") chars += t.function.arguments.length;
        const custom = t?.custom as { input?: unknown } | undefined;
        if (typeof custom?.input === "string") chars += custom.input.length;
      }
  }
  return chars;
}

export function createUpstreamChat(deps: UpstreamDeps): Middleware<ProxyState> {
  return async function upstreamChat(ctx) {
    const chat = ctx.state.chat!;
    const usage = ctx.state.usage;
    const stream = chat.stream === true;
    const signal = clientAbort(ctx.res);
    const { value: result, deployment } = await withFallbacks(
      deps,
      deps.providers.chain(ctx.state.deployment!),
      signal,
      (d) => {
        const body: Record<string, unknown> = { ...chat, model: d.model };
        if (stream) body.stream_options = { ...(chat.stream_options ?? {}), include_usage: true };
        return deps.providers.provider(d.provider).chat({ body, signal, requestId: ctx.state.requestId });
      },
      ctx.state,
    );
    usage.servedModel = deployment.name;
    usage.provider = deployment.provider;
    ctx.state.served = deployment;
    if (result.kind === "json") {
      const body = result.body as ChatCompletion;
      if (body.usage != null) {
        usage.promptTokens = reportedTokens(body.usage.prompt_tokens) ?? ctx.state.promptTokens ?? 0;
        usage.completionTokens = reportedTokens(body.usage.completion_tokens) ?? 0;
      } else {
        // A server that reports no usage (older vLLM, Ollama, some gateways): the prompt as counted (or its body at
        // 4 bytes a token) and the answer at 4 characters a token, as for a cut stream — not a free answer for the
        // row, the spend and the token budgets.
        usage.promptTokens = promptTokensEstimate(ctx);
        usage.completionTokens = Math.ceil(answerChars(body) / 4);
      }
      recordPromptCache(usage, body.usage);
      ctx.state.result = { kind: "json", body, text: receivedText(body) };
      return;
    }
    ctx.state.result = {
      kind: "stream",
      chunks: meter(
        result.chunks,
        usage,
        (ctx.state.streamed = { chars: 0, reported: false }),
        () => promptTokensEstimate(ctx),
        // A pool's target that dies mid-stream rests like one that failed before its first byte.
        deployment.pool
          ? () => {
              if (!signal.aborted) deps.providers.outcome?.(deployment, { retryAfterMs: null });
            }
          : undefined,
      ),
      includeUsage: chat.stream_options?.include_usage === true,
    };
  };
}

export function createUpstreamEmbeddings(deps: UpstreamDeps): Middleware<ProxyState> {
  return async function upstreamEmbeddings(ctx) {
    const request = ctx.state.embedding!;
    const signal = clientAbort(ctx.res);
    const { value, deployment } = await withFallbacks<EmbeddingResponse>(
      deps,
      deps.providers.chain(ctx.state.deployment!),
      signal,
      (d) =>
        deps.providers
          .provider(d.provider)
          .embeddings({ body: { ...request, model: d.model }, signal, requestId: ctx.state.requestId }),
      ctx.state,
    );
    ctx.state.usage.servedModel = deployment.name;
    ctx.state.usage.provider = deployment.provider;
    ctx.state.served = deployment;
    // No usage in the answer (some vLLM, Ollama or gateway setups): the input as counted, or its body at 4 bytes a
    // token, like an unreported chat (0 would make such answers free for budgets and spend).
    ctx.state.usage.promptTokens = reportedTokens(value.usage?.prompt_tokens) ?? promptTokensEstimate(ctx);
    ctx.state.result = { kind: "json", body: value, text: receivedText(value) };
  };
}
