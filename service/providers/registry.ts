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
  /** The deployment followed by its fallbacks, in order. */
  chain(deployment: DeploymentConfig): DeploymentConfig[];
  provider(name: string): Provider;
  /** Configured model names (for GET /v1/models). */
  models(): DeploymentConfig[];
  /** Embed texts through a deployment (the proxy's own routing), batched by the caller. */
  embed(model: string, input: string[], signal?: AbortSignal): Promise<number[][]>;
  close(): Promise<void>;
}

export function createProviderRegistry(config: Config): ProviderRegistry {
  const providers = new Map<string, Provider>();
  for (const p of Object.values(config.providers)) {
    const factory = factories.get(p.type);
    if (!factory) throw new Error(`No provider factory for type ${p.type}`);
    providers.set(p.name, factory(p));
  }
  const byName = new Map(config.models.map((m) => [m.name, m]));

  const registry: ProviderRegistry = {
    resolve(model) {
      const found = byName.get(model);
      if (found) return found;
      if (config.passthroughProvider) {
        return {
          name: model,
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
      const out = [deployment];
      for (const name of deployment.fallbacks) {
        const fb = byName.get(name);
        if (fb) out.push(fb);
      }
      return out;
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
        }
      }
      throw lastError;
    },
    async close() {
      await Promise.all([...providers.values()].map((p) => p.close()));
    },
  };
  return registry;
}
