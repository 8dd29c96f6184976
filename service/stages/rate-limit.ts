/**
 * Rate limit: reserve before the upstream call, settle after it.
 *
 * - Reserves prompt tokens + the completion allowance (both from token-count; the configured default when the
 *   allowance is missing) against every budget of the key and its team, in one atomic admission.
 * - Rejection → 429 naming the budget and scope, with Retry-After, retry-after-ms and x-ratelimit-* headers (the
 *   usage row is recorded by request-context like for any outcome).
 * - After the response: reconcile with the provider's real usage (refund or overage) — for streams once the stream
 *   has ended. A cache hit reconciles to 0 tokens (it still counted as a request). When the upstream failed before
 *   any usage was known the reserved tokens are released. When the client leaves while the provider has the request
 *   (a stream cut before its usage, or a JSON answer or a stream's first event it did not wait for) the reservation
 *   stands: the provider has most likely generated (and billed) tokens we cannot count. A client that leaves before
 *   anything was sent upstream gets its tokens back.
 * - A key's windows are its rotation chain's (keyed by the chain's first key), as its spend is.
 * - Master-key requests are not limited.
 */
import type { Middleware } from "koa";
import { Counter } from "prom-client";
import { BUDGET_FIELDS, type Budget, type Config } from "../config";
import { ClientClosedError, RateLimitError } from "../errors";
import { registry } from "../metrics";
import type { LimitOverrides, RateLimiter, Reservation, UsageRow } from "../ports";
import { addResponseHeaders, type ProxyState } from "../state";
import type { ChatCompletionChunk } from "../types";

export const admissionsTotal = new Counter({
  name: "llmproxy_ratelimit_admissions_total",
  help: "Requests admitted by the rate limiter.",
  labelNames: ["route"] as const,
  registers: [registry],
});

export const rejectionsTotal = new Counter({
  name: "llmproxy_ratelimit_rejections_total",
  help: "Requests rejected by the rate limiter, by budget (requests_per_minute, tokens_per_minute, tokens_per_day) and scope (key, team).",
  labelNames: ["route", "budget", "scope"] as const,
  registers: [registry],
});

export interface RateLimitDeps {
  config: Config;
  /** null disables rate limiting. */
  limiter: RateLimiter | null;
}

/** Overrides win over the configured defaults: null = the default, 0 = blocked. */
export function effectiveBudget(overrides: LimitOverrides | null, defaults: Budget): Budget {
  return {
    requestsPerMinute: overrides?.requestsPerMinute ?? defaults.requestsPerMinute,
    tokensPerMinute: overrides?.tokensPerMinute ?? defaults.tokensPerMinute,
    tokensPerDay: overrides?.tokensPerDay ?? defaults.tokensPerDay,
  };
}

/** A budget that can never admit this request (0, or fewer tokens than it needs): waiting does not help. */
function neverFits(budget: string, limit: number | null, tokens: number): boolean {
  return limit === 0 || (limit !== null && budget !== "requests_per_minute" && tokens > limit);
}

/**
 * The first budget of the key, then of its team, that can never admit a request of `tokens`; null if none. Judged on
 * the configured budgets also while a process enforces only its share of them (Redis unavailable): a request larger
 * than the share but within the budget is admitted once the process's window is empty (memory-limiter.ts), so
 * waiting does help it.
 */
function hopelessBudget(
  keyBudget: Budget,
  teamBudget: Budget | null,
  tokens: number,
): { scope: "key" | "team"; budget: string } | null {
  for (const [scope, b] of [
    ["key", keyBudget],
    ["team", teamBudget],
  ] as const) {
    if (!b) continue;
    for (const [budget, field] of Object.entries(BUDGET_FIELDS))
      if (neverFits(budget, b[field], tokens)) return { scope, budget };
  }
  return null;
}

function rejectionMessage(
  budget: string,
  scope: string,
  limit: number | null,
  tokens: number,
  retry: number,
  /** The limit the limiter enforced, when it is this process's share of `limit`. */
  share: number | null,
): string {
  const what = `the ${scope}'s ${budget} budget`;
  if (limit === 0) return `Rate limit: ${what} is 0 (blocked). Ask an administrator to raise it.`;
  if (neverFits(budget, limit, tokens)) {
    return `Rate limit: this request needs ${tokens} tokens (prompt + max completion), more than ${what} of ${limit}. Lower max_tokens or shorten the prompt.`;
  }
  const enforced =
    share === null ? "" : `; this process's share: ${share}, while limits are not shared across processes`;
  return `Rate limit reached for ${what} (limit ${limit}${enforced}). Retry after ${retry} s.`;
}

/** Tokens the provider really used; null when it reported nothing (keep the reservation as charged). */
function actualTokens(usage: UsageRow): number | null {
  if (usage.cacheHit) return 0;
  const total = usage.promptTokens + usage.completionTokens;
  return total > 0 ? total : null;
}

/** Settling must never fail the response: a limiter error leaves the reservation as charged, and is logged. */
function neverThrows(r: Reservation, log: { warn(obj: object, msg: string): void }): Reservation {
  const guard = (op: () => Promise<void>) =>
    op().catch((error: unknown) =>
      log.warn({ err: (error as Error).message }, "rate limit: settling the reservation failed"),
    );
  return { reconcile: (actual) => guard(() => r.reconcile(actual)), release: () => guard(() => r.release()) };
}

/** Pass the chunks through; settle the reservation once the stream is over, however it ends. */
async function* settleAfterStream(
  chunks: AsyncIterable<ChatCompletionChunk>,
  reservation: Reservation,
  usage: UsageRow,
  /** Whether the provider reported the stream's usage (the row may hold an estimate once the client left). */
  reported: () => boolean,
  /** Whether the client has gone: the upstream call is then cancelled, and its error is the cut, not a failure. */
  clientGone: () => boolean,
): AsyncGenerator<ChatCompletionChunk> {
  let outcome: "completed" | "failed" | "cut" = "cut";
  try {
    for await (const chunk of chunks) yield chunk;
    outcome = "completed";
  } catch (error) {
    outcome = clientGone() ? "cut" : "failed";
    throw error;
  } finally {
    // Cut by the client before the provider's usage: the reservation stands (the row's estimate, written when the
    // client left, counts only what reached the client; the provider went on generating and billing).
    const actual = outcome === "cut" && !usage.cacheHit && !reported() ? null : actualTokens(usage);
    if (actual !== null) await reservation.reconcile(actual);
    else if (outcome === "failed") await reservation.release();
  }
}

function unlimited(b: Budget): boolean {
  return b.requestsPerMinute === null && b.tokensPerMinute === null && b.tokensPerDay === null;
}

export function createRateLimit(deps: RateLimitDeps): Middleware<ProxyState> {
  const { limits } = deps.config;
  return async function rateLimit(ctx, next) {
    const principal = ctx.state.principal;
    if (!deps.limiter || !principal || principal.kind !== "key") return next();
    const { key, teamLimits } = principal;
    const keyBudget = effectiveBudget(key.limits, limits.key);
    const teamBudget = key.teamId ? effectiveBudget(teamLimits, limits.team) : null;
    // Nothing to enforce: skip the round trip to the limiter.
    if (unlimited(keyBudget) && (!teamBudget || unlimited(teamBudget))) return next();
    const tokens =
      (ctx.state.promptTokens ?? 0) + (ctx.state.completionAllowance ?? limits.defaultCompletionTokens);

    const admission = await deps.limiter.admit({
      // The rotation chain's windows: a rotated key's replacement does not start with fresh budgets.
      keyId: key.rotationRoot ?? key.id,
      teamId: key.teamId,
      keyBudget,
      teamBudget,
      tokens,
    });
    if (!admission.allowed) {
      // The limiter names the budget with the longest wait; a budget that can never admit this request (which may
      // be another one) decides the answer: waiting for the named one would only lead to that 429.
      const hopeless = hopelessBudget(keyBudget, teamBudget, tokens);
      const scope = hopeless?.scope ?? admission.scope;
      const name = hopeless?.budget ?? admission.budget;
      rejectionsTotal.inc({ route: ctx.state.route, budget: name, scope });
      const budget = scope === "team" ? teamBudget! : keyBudget;
      const limit = budget[BUDGET_FIELDS[name as keyof typeof BUDGET_FIELDS]];
      // What the limiter enforced for the budget it named: a per-process share of `limit` while Redis is away.
      const share = !hopeless && admission.limit !== limit ? admission.limit : null;
      let headers = admission.headers;
      if (hopeless) {
        // Still a 429, as OpenAI answers a request larger than a per-minute budget, but without Retry-After: the
        // SDKs would wait it out (up to the next UTC midnight for tokens_per_day) for a request that cannot pass.
        headers = { ...headers };
        delete headers["retry-after"];
        delete headers["retry-after-ms"];
      }
      throw new RateLimitError(
        rejectionMessage(name, scope, limit, tokens, admission.retryAfterSeconds, share),
        name,
        headers,
      );
    }
    admissionsTotal.inc({ route: ctx.state.route });
    const reservation = neverThrows(admission.reservation, ctx.state.log);
    ctx.state.reservation = reservation;
    addResponseHeaders(ctx.state, admission.headers);

    try {
      await next();
    } catch (error) {
      // Downstream failed (upstream error, timeout, …): give the tokens back; the request itself still counts. Unless
      // the client left while the provider had the request: it generates and bills anyway, so, as for a stream cut
      // before its usage, the reservation stands.
      if (!(error instanceof ClientClosedError && ctx.state.sentTo)) await reservation.release();
      throw error;
    }
    const result = ctx.state.result;
    const usage = ctx.state.usage;
    if (result?.kind === "stream") {
      result.chunks = settleAfterStream(
        result.chunks,
        reservation,
        usage,
        () => ctx.state.streamed?.reported ?? false,
        () => ctx.res.destroyed && !ctx.res.writableFinished,
      );
      return;
    }
    if (!result) {
      await reservation.release();
      return;
    }
    const actual = actualTokens(usage);
    if (actual !== null) await reservation.reconcile(actual);
  };
}
