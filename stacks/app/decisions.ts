/**
 * Pure decisions of the app component (labels, replica bounds, HPA/PDB specs, grace periods, the proxy's
 * config file). Tests call these without mocks; the component only turns them into resources.
 */
import { createHash } from "node:crypto";
import { parse as parseYaml, stringify } from "yaml";
import type { Json, PdbPolicy, ProxySettings } from "./settings";

/** The proxy's HTTP port inside the pod (service contract). */
export const PROXY_PORT = 8000;
/** Chroma server port. */
export const CHROMA_PORT = 8000;
/** uid/gid the proxy image runs as (service contract). */
export const PROXY_UID = 10001;

/** Where things live inside the proxy container. */
export const PATHS = {
  configDir: "/etc/llm-proxy",
  configFile: "/etc/llm-proxy/config.yaml",
  redisCaFile: "redis-ca.pem",
  databaseCaFile: "database-ca.pem",
  kbDir: "/var/lib/llm-proxy/knowledge-base",
  dataDir: "/var/lib/llm-proxy/data",
  tmp: "/tmp",
  chromaData: "/data",
} as const;

/**
 * Sub-directories of the shared RWX claim. `proxy-data` is the proxy's DATA_DIR: usage rows that could not be
 * written at shutdown are spooled there and replayed by whichever replica starts next (files are claimed by
 * atomic rename), so a spool survives the pod, unlike an emptyDir.
 */
export const SUB_PATHS = { kb: "knowledge-base", chroma: "chroma", data: "proxy-data" } as const;

export type Component = "proxy" | "chroma";

/** Suffix of the namespace the volume-ownership Job runs in (`<namespace>-volume-init`). */
export const VOLUME_INIT_NAMESPACE_SUFFIX = "-volume-init";
/** Longest proxy namespace: every namespace derived from it must stay a 63-character DNS label. */
export const MAX_NAMESPACE_LENGTH = 63 - VOLUME_INIT_NAMESPACE_SUFFIX.length;

/** The one labels constant: Deployment, Service, HPA, PDB and NetworkPolicy selectors all come from here. */
export function labelsFor(instance: string, component: Component): Record<string, string> {
  return {
    "app.kubernetes.io/name": component === "proxy" ? "llm-proxy" : "chroma",
    "app.kubernetes.io/instance": instance,
    "app.kubernetes.io/component": component === "proxy" ? "proxy" : "vector-store",
  };
}

/** Labels on every object (selector labels + part-of/managed-by). */
export function commonLabels(instance: string, component: Component): Record<string, string> {
  return {
    ...labelsFor(instance, component),
    "app.kubernetes.io/part-of": "llm-proxy",
    "app.kubernetes.io/managed-by": "pulumi",
  };
}

/** Deployment replicas: the HPA minimum when autoscaling (the HPA owns it afterwards), else the fixed count. */
export function deploymentReplicas(s: Pick<ProxySettings, "replicas" | "autoscaling">): number {
  return s.autoscaling.enabled ? s.autoscaling.minReplicas : s.replicas;
}

/**
 * The replica count the proxy divides budgets by when Redis is unreachable (fail-open: each worker enforces
 * budget / (replicas x workers) locally): the HPA maximum, so the pods together stay within the budget however far
 * the HPA has scaled — for budgets of at least replicas x workers, whose requests fit a share (a share is never
 * below 1 request, and a request larger than its share passes alone in an empty window; README, rate limits). With
 * fewer pods running the fallback admits less than the budget.
 */
export function budgetReplicas(s: Pick<ProxySettings, "replicas" | "autoscaling">): number {
  return s.autoscaling.enabled ? s.autoscaling.maxReplicas : s.replicas;
}

/** HPA spec (autoscaling/v2) without the target reference. */
export function hpaSpec(a: ProxySettings["autoscaling"]) {
  return {
    minReplicas: a.minReplicas,
    maxReplicas: a.maxReplicas,
    metrics: [
      {
        type: "Resource",
        resource: { name: "cpu", target: { type: "Utilization", averageUtilization: a.cpuTargetPercent } },
      },
    ],
    behavior: {
      scaleUp: {
        stabilizationWindowSeconds: 0,
        selectPolicy: "Max",
        policies: [
          { type: "Percent", value: 100, periodSeconds: 30 },
          { type: "Pods", value: 4, periodSeconds: 30 },
        ],
      },
      scaleDown: {
        stabilizationWindowSeconds: a.scaleDownStabilizationSeconds,
        selectPolicy: "Min",
        // At most one pod per minute: long streams drain before the next pod goes.
        policies: [{ type: "Pods", value: 1, periodSeconds: 60 }],
      },
    },
  };
}

/** PDB spec fields (policy/v1): exactly one of minAvailable / maxUnavailable. */
export function pdbSpecFields(p: PdbPolicy): { minAvailable: number } | { maxUnavailable: number } {
  return "maxUnavailable" in p ? { maxUnavailable: p.maxUnavailable } : { minAvailable: p.minAvailable };
}

/**
 * The pod's grace period: the preStop delay, then the proxy's own shutdown grace (the longest stream), plus a
 * margin for the process to exit. Always longer than the longest stream.
 */
export function terminationGraceSeconds(
  s: Pick<ProxySettings, "preStopDelaySeconds" | "requestTimeoutSeconds">,
) {
  return s.preStopDelaySeconds + s.requestTimeoutSeconds + 15;
}

/**
 * What the component refuses to deploy even when handed settings that bypassed stacks/config.ts: an HPA
 * range upside down, a PDB that blocks every drain, less memory than the workers need.
 */
export function proxySettingsProblems(s: ProxySettings): string[] {
  const problems: string[] = [];
  const floor = deploymentReplicas(s);
  if (s.autoscaling.enabled && s.autoscaling.minReplicas > s.autoscaling.maxReplicas) {
    problems.push(
      `minReplicas ${s.autoscaling.minReplicas} exceeds maxReplicas ${s.autoscaling.maxReplicas}. Lower it.`,
    );
  }
  if ("minAvailable" in s.pdb && s.pdb.minAvailable >= floor) {
    problems.push(
      `PDB minAvailable ${s.pdb.minAvailable} blocks every node drain with ${floor} replicas. Lower it.`,
    );
  }
  const need = 60 + 150 * s.workers;
  if (s.memoryRequestMi < need) {
    problems.push(
      `memory request ${s.memoryRequestMi}Mi is below ${need}Mi for ${s.workers} workers. Raise it.`,
    );
  }
  return problems;
}

/** Kubernetes quantity strings. */
export function resources(s: ProxySettings) {
  return {
    requests: { cpu: `${s.cpuRequestMillicores}m`, memory: `${s.memoryRequestMi}Mi` },
    limits: {
      memory: `${s.memoryLimitMi}Mi`,
      ...(s.cpuLimitMillicores > 0 ? { cpu: `${s.cpuLimitMillicores}m` } : {}),
    },
  };
}

/** Plain (non-secret) environment of the proxy container; names come from the service contract. */
export function proxyPlainEnv(s: ProxySettings, chromaUrl: string | undefined): Record<string, string> {
  return {
    PORT: String(PROXY_PORT),
    HOST: "0.0.0.0",
    WORKERS: String(s.workers),
    CONFIG_FILE: PATHS.configFile,
    KB_DIR: PATHS.kbDir,
    DATA_DIR: PATHS.dataDir,
    CACHE_ENABLED: String(s.cacheEnabled),
    CACHE_TTL_SECONDS: String(s.cacheTtlSeconds),
    RATE_LIMIT_FAILURE_MODE: s.rateLimitFailureMode,
    REPLICAS: String(budgetReplicas(s)),
    SHUTDOWN_GRACE_SECONDS: String(s.requestTimeoutSeconds),
    LOG_LEVEL: s.logLevel,
    // Behind the Ingress, its controller appends the client's address to X-Forwarded-For (the audit log's client_ip).
    ...(s.ingress ? { TRUSTED_PROXY_HOPS: String(s.ingress.trustedProxyHops) } : {}),
    // Only when set: the variable overrides the config file, where proxyConfig may set usage.retention_days.
    ...(s.usageRetentionDays > 0 ? { USAGE_RETENTION_DAYS: String(s.usageRetentionDays) } : {}),
    ...(chromaUrl ? { CHROMA_URL: chromaUrl } : {}),
  };
}

/** Keys of the proxy's Secret: connection strings, the master key, then provider keys. */
export function secretKeys(providerKeyEnvs: string[]): string[] {
  return ["DATABASE_URL", "REDIS_URL", "PROXY_MASTER_KEY", ...providerKeyEnvs];
}

function isObject(v: unknown): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, everything else (arrays included) is replaced by the override. */
export function deepMerge(base: Json, override: Json): Json {
  if (!isObject(base) || !isObject(override)) return override;
  const out: Record<string, Json> = { ...base };
  for (const [k, v] of Object.entries(override)) out[k] = k in base ? deepMerge(base[k], v) : v;
  return out;
}

/**
 * `proxyConfig` as a mapping, or the problem with it. A YAML error names the line and column only: the text may be
 * a secret (`pulumi config set --secret`), so the offending line is never echoed.
 */
export function parseProxyConfig(text: string): { value: { [k: string]: Json } } | { problem: string } {
  if (!text.trim()) return { value: {} };
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    const e = error as Error & { linePos?: Array<{ line: number; col: number }> };
    const at = e.linePos?.[0] ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : "";
    return { problem: `is not valid YAML${at}` };
  }
  if (parsed === null || parsed === undefined) return { value: {} };
  if (!isObject(parsed)) return { problem: "must be a YAML mapping (providers:, models:, limits: ...)" };
  return { value: parsed };
}

/**
 * Merge `proxyConfig` over the generated file: a model whose name is generated replaces that model, other models
 * are added (so generated models, and the embedding_model naming one, stay); every other key deep-merges.
 */
export function mergeProxyConfig(base: { [k: string]: Json }, extra: { [k: string]: Json }): Json {
  const { models: extraModels, ...rest } = extra;
  const merged = deepMerge(base, rest) as { [k: string]: Json };
  if (extraModels === undefined) return merged;
  if (!Array.isArray(extraModels)) return { ...merged, models: extraModels };
  const models = [...((base.models as Json[] | undefined) ?? [])];
  for (const m of extraModels) {
    const name = isObject(m) ? m.name : undefined;
    const i = name === undefined ? -1 : models.findIndex((b) => isObject(b) && b.name === name);
    if (i >= 0) models[i] = m;
    else models.push(m);
  }
  return { ...merged, models };
}

/**
 * The proxy's YAML config file. Generated from the stack settings and the provider keys that are set, then
 * `proxyConfig` is merged over it (mergeProxyConfig). Names env vars for the provider keys.
 */
export function proxyConfigYaml(s: ProxySettings, providerKeyEnvs: string[]): string {
  const providers: Record<string, Json> = {};
  const models: Json[] = [];
  let embeddingModel: string | undefined;
  if (providerKeyEnvs.includes("OPENAI_API_KEY")) {
    providers.openai = {
      type: "openai",
      base_url: "https://api.openai.com/v1",
      api_key_env: "OPENAI_API_KEY",
    };
    models.push({ name: "gpt-4o-mini", provider: "openai", max_input_tokens: 128000 });
    models.push({ name: "gpt-4o", provider: "openai", fallbacks: ["gpt-4o-mini"], max_input_tokens: 128000 });
    models.push({ name: "text-embedding-3-small", provider: "openai", kind: "embedding" });
    embeddingModel = "text-embedding-3-small";
  }
  if (providerKeyEnvs.includes("ANTHROPIC_API_KEY")) {
    // The Messages API through the proxy's translation (clients keep speaking OpenAI).
    providers.anthropic = {
      type: "anthropic",
      base_url: "https://api.anthropic.com/v1",
      api_key_env: "ANTHROPIC_API_KEY",
    };
    models.push({ name: "claude-haiku-5-5", provider: "anthropic", max_input_tokens: 200000 });
    models.push({
      name: "claude-sonnet-5-5",
      provider: "anthropic",
      fallbacks: ["claude-haiku-5-5"],
      max_input_tokens: 200000,
    });
  }
  const base: { [k: string]: Json } = {
    providers,
    models,
    ...(embeddingModel ? { embedding_model: embeddingModel } : {}),
    limits: { failure_mode: s.rateLimitFailureMode, replicas: budgetReplicas(s) },
    cache: { enabled: s.cacheEnabled, ttl_seconds: s.cacheTtlSeconds },
    server: { request_timeout_ms: s.requestTimeoutSeconds * 1000 },
  };
  return stringify(mergeProxyConfig(base, s.proxyConfig), { lineWidth: 0 });
}

/** sha256 of the given texts, for the pod annotation that rolls pods when config or secrets change. */
export function checksum(...parts: string[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p).update("\0");
  return h.digest("hex");
}
