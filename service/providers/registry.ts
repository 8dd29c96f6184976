/**
 * Provider registry: provider types are registered by name ("openai" for every OpenAI-compatible API, "anthropic"
 * for the Messages API through a translation, "mock"), so another translation (Bedrock, Gemini …) slots in as one
 * more factory without touching the stages.
 */
import type { Config, DeploymentConfig, ProviderConfig } from "../config";
import type { Provider } from "../ports";
import type { EmbeddingResponse } from "../types";
import { NotFoundError, UpstreamError } from "../errors";
import { createAnthropicProvider } from "./anthropic";
import { createOpenAICompatibleProvider } from "./openai-compatible";
import { createMockProvider } from "./mock";
import { ProviderFailure } from "./errors";
import { Counter } from "prom-client";
import { registry } from "../metrics";

export type ProviderFactory = (config: ProviderConfig) => Provider;

const factories = new Map<string, ProviderFactory>([
  ["openai", (c) => createOpenAICompatibleProvider(c as Extract<ProviderConfig, { type: "openai" }>)],
  ["anthropic", (c) => createAnthropicProvider(c as Extract<ProviderConfig, { type: "anthropic" }>)],
  ["mock", (c) => createMockProvider(c as Extract<ProviderConfig, { type: "mock" }>)],
]);

/** Register another provider type (e.g. a Bedrock translation). */
export function registerProviderType(type: string, factory: ProviderFactory): void {
  factories.set(type, factory);
}

export interface ProviderRegistry {
  /** The deployment for a client model name: configured, or the zero-config passthrough; null if unknown. */
  resolve(model: string): DeploymentConfig | null;
  /**
   * The deployment followed by its fallbacks, in order. A load-balanced deployment contributes each of its targets
   * (as a deployment of that target's provider and model): the healthy ones in a weighted random order, then those
   * cooling down after a failure, soonest back first.
   */
  chain(deployment: DeploymentConfig): DeploymentConfig[];
  /**
   * What came of an attempt on a deployment of `chain`: null when it answered, else the failure's Retry-After.
   * A target of a pool that failed is tried after the healthy ones for its cooldown (or the Retry-After, if longer).
   */
  outcome?(
    deployment: DeploymentConfig,
    failure: { retryAfterMs: number | null } | null,
    /** When the attempt started (performance.now()): a success ends only a cooldown that began before it. */
    attemptStarted?: number,
  ): void;
  provider(name: string): Provider;
  /** Configured model names (for GET /v1/models). */
  models(): DeploymentConfig[];
  /** Embed texts through a deployment (the proxy's own routing), batched by the caller. */
  embed(model: string, input: string[], signal?: AbortSignal): Promise<number[][]>;
  close(): Promise<void>;
}

/** A load-balanced deployment's targets (as deployments) and the state of each, by index. */
interface Pool {
  members: DeploymentConfig[];
  weights: number[];
  /** Epoch ms until which a target that failed is tried only after the healthy ones. */
  downUntil: number[];
  /** When each cooldown began (performance.now()). */
  downSince: number[];
  cooldownMs: number;
}

/** However long a Retry-After, a target is back in the rotation after this. */
const MAX_COOLDOWN_MS = 300_000;

const poolCooldowns = new Counter({
  name: "llmproxy_upstream_cooldowns_total",
  help: "Targets of a load-balanced model put into cooldown after a failed attempt, by model and provider.",
  labelNames: ["model", "provider"] as const,
  registers: [registry],
});

/**
 * The targets in the order to try them: those not cooling down in a weighted random order (each draw picks a
 * target with probability weight / sum of the remaining weights: Efraimidis–Spirakis keys), then those cooling down,
 * soonest back first — they are still tried when every healthy one fails.
 */
export function poolOrder(
  pool: Pick<Pool, "members" | "weights" | "downUntil">,
  now: number,
  random = Math.random,
): DeploymentConfig[] {
  const healthy: Array<{ i: number; key: number }> = [];
  const cooling: number[] = [];
  pool.members.forEach((_, i) => {
    if (pool.downUntil[i] <= now) healthy.push({ i, key: Math.pow(random(), 1 / pool.weights[i]) });
    else cooling.push(i);
  });
  healthy.sort((a, b) => b.key - a.key);
  cooling.sort((a, b) => pool.downUntil[a] - pool.downUntil[b]);
  return [...healthy.map((h) => pool.members[h.i]), ...cooling.map((i) => pool.members[i])];
}

export function createProviderRegistry(config: Config): ProviderRegistry {
  const providers = new Map<string, Provider>();
  for (const p of Object.values(config.providers)) {
    const factory = factories.get(p.type);
    if (!factory) throw new Error(`No provider factory for type ${p.type}`);
    providers.set(p.name, factory(p));
  }
  const byName = new Map(config.models.map((m) => [m.name, m]));
  const pools = new Map<DeploymentConfig, Pool>();
  const memberOf = new Map<DeploymentConfig, { pool: Pool; index: number }>();
  for (const d of config.models) {
    if (!d.pool) continue;
    const { targets, cooldownMs } = d.pool;
    const pool: Pool = {
      members: targets.map((t) => ({ ...d, provider: t.provider, model: t.model })),
      weights: targets.map((t) => t.weight),
      downUntil: targets.map(() => 0),
      downSince: targets.map(() => 0),
      cooldownMs,
    };
    pools.set(d, pool);
    pool.members.forEach((member, index) => memberOf.set(member, { pool, index }));
  }
  const expand = (d: DeploymentConfig, out: DeploymentConfig[]) => {
    const pool = pools.get(d);
    if (pool) out.push(...poolOrder(pool, Date.now()));
    else out.push(d);
  };

  const registry: ProviderRegistry = {
    resolve(model) {
      const found = byName.get(model);
      if (found) return found;
      if (config.passthroughProvider) {
        return {
          name: model,
          passthrough: true,
          provider: config.passthroughProvider,
          model,
          fallbacks: [],
          maxInputTokens: null,
          kind: "chat",
          pricing: null,
        };
      }
      return null;
    },
    chain(deployment) {
      const out: DeploymentConfig[] = [];
      expand(deployment, out);
      for (const name of deployment.fallbacks) {
        const fb = byName.get(name);
        if (fb) expand(fb, out);
      }
      return out;
    },
    outcome(deployment, failure, attemptStarted = Infinity) {
      const member = memberOf.get(deployment);
      if (!member) return;
      const { pool, index } = member;
      if (!failure) {
        // A slow success that started before another request's failure does not end that failure's cooldown.
        if (pool.downSince[index] < attemptStarted) pool.downUntil[index] = 0;
        return;
      }
      pool.downSince[index] = performance.now();
      if (pool.cooldownMs === 0) return;
      const ms = Math.min(MAX_COOLDOWN_MS, Math.max(pool.cooldownMs, failure.retryAfterMs ?? 0));
      pool.downUntil[index] = Date.now() + ms;
      poolCooldowns.inc({ model: deployment.name, provider: deployment.provider });
    },
    provider(name) {
      const p = providers.get(name);
      if (!p) throw new Error(`Unknown provider ${name}`);
      return p;
    },
    models() {
      return config.models;
    },
    async embed(model, input, signal) {
      const deployment = registry.resolve(model);
      if (!deployment)
        throw new NotFoundError(`The model \`${model}\` does not exist.`, "model_not_found", "model");
      let lastError: unknown;
      for (const d of registry.chain(deployment)) {
        try {
          const res: EmbeddingResponse = await registry.provider(d.provider).embeddings({
            body: { model: d.model, input },
            signal: signal ?? AbortSignal.timeout(60_000),
            requestId: "embed",
          });
          const sorted = [...res.data].sort((a, b) => a.index - b.index);
          return sorted.map((e) => {
            if (typeof e.embedding === "string")
              throw new UpstreamError("Upstream returned base64 embeddings.");
            return e.embedding;
          });
        } catch (error) {
          lastError = error;
          // A request the provider refused (bad input, too long) fails on every fallback too.
          if (error instanceof ProviderFailure && !error.retryable && !error.targetFault) break;
        }
      }
      // The client gets what the chat path gives it: 502 upstream_error, or the provider's own 4xx and message.
      throw lastError instanceof ProviderFailure ? lastError.clientError : lastError;
    },
    async close() {
      await Promise.all([...providers.values()].map((p) => p.close()));
    },
  };
  return registry;
}
