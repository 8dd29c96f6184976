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
 * Prompt tokens split into the parts a provider prices apart: read from its prompt cache, written to it (of those,
 * written to a 1-hour cache) and the rest. Each part stays within what the prompt has left (reads first) and at 0 or
 * more, whatever the provider reported.
 */
export function promptParts(prompt: number, cached: number, written: number, written1h: number) {
  const read = Math.min(Math.max(cached, 0), prompt);
  const write = Math.min(Math.max(written, 0), prompt - read);
  const hour = Math.min(Math.max(written1h, 0), write);
  return { plain: prompt - read - write, read, write, hour };
}

/**
 * USD for a request that `served` (the deployment that answered, or that had the request when its client left;
 * absent when no provider had it) handled. 0 when no provider had it (rejected, failed before an answer) or for a
 * cache hit. null — unknown, never a made-up 0 — when the deployment has no price, or when it has no tokens to
 * price (usage that never arrived and no estimate in its place).
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
  const p = promptParts(
    usage.promptTokens,
    usage.cachedTokens,
    usage.cacheWriteTokens ?? 0,
    usage.cacheWrite1hTokens ?? 0,
  );
  return (
    p.plain * pricing.input +
    p.read * pricing.cachedInput +
    (p.write - p.hour) * pricing.cacheWriteInput +
    p.hour * pricing.cacheWrite1hInput +
    usage.completionTokens * pricing.output
  );
}
