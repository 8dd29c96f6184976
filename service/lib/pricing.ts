/**
 * What a request cost, from the served deployment's prices (config `pricing`, USD per million tokens) and the
 * provider's token counts. Priced at the deployment that answered — after a fallback, the fallback's price — which
 * is what the provider bills. Prompt tokens served from the provider's prompt cache are priced at the cached-input
 * price (OpenAI `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`).
 */
import type { Pricing } from "../config";
import type { UsageRow } from "../ports";

/**
 * USD, or null when a provider served tokens but the deployment has no price configured (unknown, not free).
 * A request that consumed no provider tokens (rejected, cache hit, failed before any usage) costs 0.
 */
export function costUsd(
  usage: Pick<UsageRow, "promptTokens" | "completionTokens" | "cachedTokens" | "cacheHit">,
  pricing: Pricing | null | undefined,
): number | null {
  if (usage.cacheHit || usage.promptTokens + usage.completionTokens === 0) return 0;
  if (!pricing) return null;
  const cached = Math.min(Math.max(usage.cachedTokens, 0), usage.promptTokens);
  return (
    (usage.promptTokens - cached) * pricing.input +
    cached * pricing.cachedInput +
    usage.completionTokens * pricing.output
  );
}
