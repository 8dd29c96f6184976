/**
 * What a request cost, from the served deployment's prices (config `pricing`, USD per million tokens) and the
 * provider's token counts. Priced at the deployment that answered — after a fallback, the fallback's price — which
 * is what the provider bills. Prompt tokens served from the provider's prompt cache are priced at the cached-input
 * price (OpenAI `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`); prompt tokens written to
 * it at the cache-write price (Anthropic `cache_creation_input_tokens`, `prompt_tokens_details.cache_write_tokens` from
 * OpenAI-compatible gateways that report it).
 */
import type { Pricing } from "../config";
import type { UsageRow } from "../ports";

/**
 * USD for a request that `served` (the deployment that answered; absent when no provider answered) handled.
 * 0 when no provider answered (rejected, failed before an answer) or for a cache hit. null — unknown, never a
 * made-up 0 — when the deployment has no price, or when it answered but its usage never arrived (a stream cut before
 * its usage chunk: the provider has most likely billed tokens nobody can count).
 */
export function costUsd(
  usage: Pick<
    UsageRow,
    | "promptTokens"
    | "completionTokens"
    | "cachedTokens"
    | "cacheWriteTokens"
    | "cacheWrite1hTokens"
    | "cacheHit"
  >,
  served: { pricing: Pricing | null } | undefined,
): number | null {
  if (usage.cacheHit || !served) return 0;
  const pricing = served.pricing;
  if (!pricing || usage.promptTokens + usage.completionTokens === 0) return null;
  const cached = Math.min(Math.max(usage.cachedTokens, 0), usage.promptTokens);
  const written = Math.min(Math.max(usage.cacheWriteTokens ?? 0, 0), usage.promptTokens - cached);
  const hour = Math.min(Math.max(usage.cacheWrite1hTokens ?? 0, 0), written);
  return (
    (usage.promptTokens - cached - written) * pricing.input +
    cached * pricing.cachedInput +
    (written - hour) * pricing.cacheWriteInput +
    hour * pricing.cacheWrite1hInput +
    usage.completionTokens * pricing.output
  );
}
