/**
 * The service's configuration: one zod schema for the environment and one for the YAML config file, parsed once
 * at start and frozen. This is the only module that reads `process.env` (through `loadConfig({ env })`) or the
 * config file. A bad value stops the process with every problem listed, each naming the key and what is expected.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { PII_ENTITIES, type PiiEntity } from "./lib/pii/types";
import { redisUrlProblem, splitRedisUrls } from "./lib/redis-url";

/** Every environment variable the service reads (provider keys named by the config file come on top). */
export const ENV_VARS = [
  "PORT",
  "HOST",
  "WORKERS",
  "PROXY_MASTER_KEY",
  "DATABASE_URL",
  "DATABASE_CA",
  "DATABASE_WAIT_SECONDS",
  "REDIS_URL",
  "REDIS_TLS_CA",
  "REDIS_CLUSTER",
  "CHROMA_URL",
  "KB_DIR",
  "DATA_DIR",
  "CONFIG_FILE",
  "CACHE_ENABLED",
  "CACHE_TTL_SECONDS",
  "RATE_LIMIT_FAILURE_MODE",
  "REPLICAS",
  "SHUTDOWN_GRACE_SECONDS",
  "TRUSTED_PROXY_HOPS",
  "LOG_LEVEL",
  "LOG_FLUSH_MS",
  "USAGE_RETENTION_DAYS",
  "OPENAI_API_KEY",
  "OPENAI_BASE_URL",
  "ANTHROPIC_API_KEY",
  "AZURE_OPENAI_API_KEY",
] as const;

/** Provider credentials are passed as `<NAME>_API_KEY` variables and referenced from the config file. */
export function isProviderKeyEnv(name: string): boolean {
  return /^[A-Z][A-Z0-9_]*_API_KEY$/.test(name);
}

// One list of PII entity types, owned by the PII library (a pure constants module).
export { PII_ENTITIES, type PiiEntity };

export const KEY_SCOPES = ["chat", "embeddings", "models", "kb:write", "*"] as const;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** A budget: null means unlimited, 0 means blocked. */
const budgetValue = z.number().int().min(0).nullable().optional();
const budgetSchema = z
  .object({
    requests_per_minute: budgetValue,
    tokens_per_minute: budgetValue,
    tokens_per_day: budgetValue,
  })
  .strict();

/** An upstream's URL: only http(s) — undici refuses anything else at the first request, in every worker. */
const httpUrl = () => z.url({ protocol: /^https?$/, error: "an http:// or https:// URL" });

/** Whether a URL carries `user:password@` (the provider client connects to its origin, which drops them). */
function hasCredentials(value: string): boolean {
  try {
    const url = new URL(value);
    return url.username !== "" || url.password !== "";
  } catch {
    return false;
  }
}

/** A provider's URL: http(s), and no credentials in it (never sent; the problem never quotes them). */
const upstreamUrl = () =>
  httpUrl().refine(
    (v) => !hasCredentials(v),
    "contains credentials (user:password@), which are not sent; remove them and put the key in an environment variable named by api_key_env (or in headers:)",
  );

/**
 * A secret read from the environment as written by `kubectl create secret --from-file` or `$(cat file)`: a trailing
 * run of white space and line breaks is removed. A line break or control character inside is a problem (it cannot
 * be sent in a header, and no key has one); the problem never quotes the value.
 */
export function cleanSecret(value: string): { value: string; problem: string | null } {
  const trimmed = value.replace(/\s+$/u, "");
  if (/[\r\n]/.test(trimmed))
    return {
      value: trimmed,
      problem:
        "contains a line break inside the value (a trailing one is removed, not one inside); write the key on one line",
    };
  // eslint-disable-next-line no-control-regex -- control characters are what this looks for
  const control = /[\x00-\x1f\x7f]/.exec(trimmed);
  if (control) {
    const code = control[0].charCodeAt(0);
    return {
      value: trimmed,
      problem: `contains a control character (U+${code.toString(16).padStart(4, "0").toUpperCase()}); write the key without it`,
    };
  }
  return { value: trimmed, problem: null };
}

/** Environment variables holding the proxy's or the zero-config provider's key: cleaned by cleanSecret. */
const SECRET_ENV = new Set(["PROXY_MASTER_KEY", "OPENAI_API_KEY"]);

/** The proxy's own secrets: a provider's `api_key_env` naming one would send it upstream as the provider's key. */
const OWN_SECRETS = new Set(["PROXY_MASTER_KEY", "DATABASE_URL", "REDIS_URL", "DATABASE_CA", "REDIS_TLS_CA"]);
const apiKeyEnv = (example: string) =>
  z
    .string()
    .regex(/^[A-Z][A-Z0-9_]*$/, `an environment variable name such as ${example}`)
    .refine((name) => !OWN_SECRETS.has(name), "must not name one of the proxy's own settings (its secrets)");

/** Provider names (the record keys under providers:). */
const PROVIDER_NAME = /^[a-z0-9][a-z0-9_-]*$/;

/** Extra headers sent to a provider: HTTP token names, values without line breaks (undici refuses both per request). */
const providerHeaders = z
  .record(
    z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "a header name (letters, digits and -, no spaces)"),
    z.string().regex(/^[^\r\n\0]*$/, "a header value without line breaks or NUL"),
  )
  .default({});

/** The mock provider's longest latency. */
export const MAX_MOCK_LATENCY_MS = 600_000;

/** The longest cooldown of a pool target (service/providers/registry.ts caps a Retry-After at it too). */
export const MAX_COOLDOWN_SECONDS = 300;

const providerSchema = z.discriminatedUnion("type", [
  z
    .object({
      type: z.literal("openai"),
      base_url: upstreamUrl(),
      /** Name of the env var holding the key; secrets never live in the file. */
      api_key_env: apiKeyEnv("OPENAI_API_KEY").optional(),
      /** Azure OpenAI wants `api-key:` instead of `Authorization: Bearer`. */
      auth_header: z.enum(["authorization", "api-key"]).default("authorization"),
      /** Extra query string (Azure: `api-version=2024-10-21`). */
      query: z.record(z.string(), z.string()).default({}),
      headers: providerHeaders,
      timeout_ms: z.number().int().positive().default(60_000),
      max_retries: z.number().int().min(0).max(5).default(1),
      connections: z.number().int().positive().default(128),
    })
    .strict(),
  z
    .object({
      type: z.literal("anthropic"),
      base_url: upstreamUrl().default("https://api.anthropic.com/v1"),
      api_key_env: apiKeyEnv("ANTHROPIC_API_KEY").optional(),
      /** The `anthropic-version` header. */
      version: z.string().min(1).default("2023-06-01"),
      /** Anthropic requires max_tokens; used when the request sets neither max_tokens nor max_completion_tokens. */
      default_max_tokens: z.number().int().positive().default(4096),
      /** Top-level `cache_control`: Anthropic caches the prompt prefix automatically (reads cost a tenth of input). */
      prompt_caching: z.boolean().default(true),
      headers: providerHeaders,
      timeout_ms: z.number().int().positive().default(60_000),
      max_retries: z.number().int().min(0).max(5).default(1),
      connections: z.number().int().positive().default(128),
    })
    .strict(),
  // At most 10 minutes (a longer timer overflows Node's 32-bit limit and fires after 1 ms).
  z
    .object({
      type: z.literal("mock"),
      latency_ms: z.number().int().min(0).max(MAX_MOCK_LATENCY_MS, "at most 600000 (10 minutes)").default(0),
    })
    .strict(),
]);

/** One upstream of a load-balanced deployment. */
const targetSchema = z
  .object({
    provider: z.string().min(1),
    model: z.string().min(1).optional(),
    weight: z.number().positive().max(1_000_000).default(1),
  })
  .strict();

const deploymentSchema = z
  .object({
    name: z.string().min(1),
    /** One upstream: a provider and its model name. */
    provider: z.string().min(1).optional(),
    model: z.string().min(1).optional(),
    /** Or several, load-balanced by weight (instead of provider/model). */
    targets: z.array(targetSchema).min(1).max(64).optional(),
    /** How long a target that failed is tried only after the healthy ones. Default 10; 0 = never. */
    cooldown_seconds: z
      .number()
      .min(0)
      .max(
        MAX_COOLDOWN_SECONDS,
        "at most 300 (5 minutes: the longest a failed target is kept out of the rotation)",
      )
      .optional(),
    fallbacks: z.array(z.string().min(1)).default([]),
    max_input_tokens: z.number().int().positive().optional(),
    kind: z.enum(["chat", "embedding"]).default("chat"),
    /** USD per million tokens; usage rows and the usage report carry the cost of what this deployment served. */
    pricing: z
      .object({
        input_per_mtok: z.number().nonnegative(),
        output_per_mtok: z.number().nonnegative().default(0),
        cached_input_per_mtok: z.number().nonnegative().optional(),
        cache_write_input_per_mtok: z.number().nonnegative().optional(),
        cache_write_1h_input_per_mtok: z.number().nonnegative().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const fileSchema = z
  .object({
    providers: z
      .record(
        z
          .string()
          .regex(
            PROVIDER_NAME,
            "a provider name: lower-case letters a-z, digits, - and _, starting with a letter or digit",
          ),
        providerSchema,
      )
      .default({}),
    models: z.array(deploymentSchema).default([]),
    embedding_model: z.string().min(1).optional(),
    limits: z
      .object({
        failure_mode: z.enum(["fail-open", "fail-closed"]).optional(),
        replicas: z.number().int().positive().optional(),
        default_completion_tokens: z.number().int().positive().default(1024),
        key: budgetSchema.default({}),
        team: budgetSchema.default({}),
      })
      .strict()
      .default({ default_completion_tokens: 1024, key: {}, team: {} }),
    cache: z
      .object({
        enabled: z.boolean().optional(),
        ttl_seconds: z.number().int().positive().optional(),
        scope: z.enum(["team", "key", "global"]).default("team"),
        max_entries: z.number().int().positive().default(10_000),
      })
      .strict()
      .default({ scope: "team", max_entries: 10_000 }),
    content_policy: z
      .object({
        blocked_patterns: z.array(z.string().min(1)).default([]),
        max_input_tokens: z.number().int().positive().optional(),
      })
      .strict()
      .default({ blocked_patterns: [] }),
    pii: z
      .object({
        enabled: z.boolean().default(true),
        names: z.enum(["gazetteer", "compromise", "off"]).default("gazetteer"),
        entities: z.partialRecord(z.enum(PII_ENTITIES), z.boolean()).default({}),
        allow_list: z.array(z.string()).default([]),
      })
      .strict()
      .default({ enabled: true, names: "gazetteer", entities: {}, allow_list: [] }),
    rag: z
      .object({
        collection: z
          .string()
          .regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}$/)
          .default("kb"),
        top_k: z.number().int().min(1).max(50).default(5),
        min_score: z.number().min(-1).max(1).default(0.2),
        context_tokens: z.number().int().positive().default(1500),
        chunk_tokens: z.number().int().min(32).max(8192).default(256),
        chunk_overlap: z.number().int().min(0).default(32),
      })
      .strict()
      .default({
        collection: "kb",
        top_k: 5,
        min_score: 0.2,
        context_tokens: 1500,
        chunk_tokens: 256,
        chunk_overlap: 32,
      }),
    usage: z
      .object({
        retention_days: z.number().int().min(1).max(36_500).nullable().default(null),
      })
      .strict()
      .default({ retention_days: null }),
    server: z
      .object({
        body_limit_bytes: z
          .number()
          .int()
          .positive()
          .default(4 * 1024 * 1024),
        request_timeout_ms: z.number().int().positive().default(600_000),
      })
      .strict()
      .default({ body_limit_bytes: 4 * 1024 * 1024, request_timeout_ms: 600_000 }),
  })
  .strict();

const intFromEnv = (min: number, max: number) =>
  z.string().regex(/^\d+$/, "a whole number").transform(Number).pipe(z.number().int().min(min).max(max));

/**
 * The whole-number environment variables a deployment sets and their accepted ranges (the stacks hold their config
 * keys to these, so `pulumi up` never starts pods this refuses).
 */
export const ENV_RANGES = {
  WORKERS: { min: 1, max: 256 },
  CACHE_TTL_SECONDS: { min: 1, max: 30 * 86400 },
  SHUTDOWN_GRACE_SECONDS: { min: 1, max: 3600 },
  REPLICAS: { min: 1, max: 10_000 },
  USAGE_RETENTION_DAYS: { min: 0, max: 36_500 },
  TRUSTED_PROXY_HOPS: { min: 0, max: 10 },
} as const;

const rangedEnv = (name: keyof typeof ENV_RANGES) => intFromEnv(ENV_RANGES[name].min, ENV_RANGES[name].max);

const boolFromEnv = z
  .enum(["true", "false", "1", "0", "yes", "no"], "true or false")
  .transform((v) => v === "true" || v === "1" || v === "yes");

/** Whether `value` parses as a URL (a port that is not a number, a malformed host: the clients would throw later). */
function parsesAsUrl(value: string): boolean {
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

const envSchema = z.object({
  PORT: intFromEnv(0, 65535).optional(),
  HOST: z.string().min(1).optional(),
  WORKERS: rangedEnv("WORKERS").optional(),
  PROXY_MASTER_KEY: z
    .string()
    .min(32, "at least 32 characters (generate one: openssl rand -hex 32)")
    .superRefine((v, ctx) => {
      const { problem } = cleanSecret(v);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .optional(),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "a postgres:// URL")
    .refine(
      parsesAsUrl,
      "a postgres:// URL that parses: host, a numeric port, special characters percent-encoded",
    )
    .optional(),
  DATABASE_CA: z.string().includes("BEGIN CERTIFICATE", { message: "a PEM certificate" }).optional(),
  DATABASE_WAIT_SECONDS: intFromEnv(0, 3600).optional(),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, "a redis:// or rediss:// URL")
    .refine(
      (v) => splitRedisUrls(v).every(parsesAsUrl),
      "redis:// or rediss:// URLs that parse: host, a numeric port, special characters percent-encoded",
    )
    .optional(),
  REDIS_TLS_CA: z.string().includes("BEGIN CERTIFICATE", { message: "a PEM certificate" }).optional(),
  REDIS_CLUSTER: boolFromEnv.optional(),
  CHROMA_URL: httpUrl().optional(),
  KB_DIR: z.string().min(1).optional(),
  DATA_DIR: z.string().min(1).optional(),
  CONFIG_FILE: z.string().min(1).optional(),
  CACHE_ENABLED: boolFromEnv.optional(),
  CACHE_TTL_SECONDS: rangedEnv("CACHE_TTL_SECONDS").optional(),
  RATE_LIMIT_FAILURE_MODE: z.enum(["fail-open", "fail-closed"]).optional(),
  REPLICAS: rangedEnv("REPLICAS").optional(),
  SHUTDOWN_GRACE_SECONDS: rangedEnv("SHUTDOWN_GRACE_SECONDS").optional(),
  TRUSTED_PROXY_HOPS: rangedEnv("TRUSTED_PROXY_HOPS").optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS).optional(),
  LOG_FLUSH_MS: intFromEnv(0, 60_000).optional(),
  USAGE_RETENTION_DAYS: rangedEnv("USAGE_RETENTION_DAYS").optional(),
  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: upstreamUrl().optional(),
});

export interface Budget {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
  tokensPerDay: number | null;
}

/** Each budget's name — in the config file, the admin API, 429 errors and headers — and its field. */
export const BUDGET_FIELDS = {
  requests_per_minute: "requestsPerMinute",
  tokens_per_minute: "tokensPerMinute",
  tokens_per_day: "tokensPerDay",
} as const satisfies Record<string, keyof Budget>;

export type ProviderConfig =
  | {
      name: string;
      type: "openai";
      baseUrl: string;
      /** The resolved secret; never logged. */
      apiKey: string | null;
      authHeader: "authorization" | "api-key";
      query: Record<string, string>;
      headers: Record<string, string>;
      timeoutMs: number;
      maxRetries: number;
      connections: number;
    }
  | {
      name: string;
      type: "anthropic";
      baseUrl: string;
      /** The resolved secret; never logged. */
      apiKey: string | null;
      version: string;
      defaultMaxTokens: number;
      promptCaching: boolean;
      headers: Record<string, string>;
      timeoutMs: number;
      maxRetries: number;
      connections: number;
    }
  | { name: string; type: "mock"; latencyMs: number };

export interface DeploymentConfig {
  /** Client-facing model name. */
  name: string;
  /** Made up for a name the client sent on the zero-config path (not configured): its name is the client's string. */
  passthrough?: boolean;
  /** The provider (of a pool: its first target's). */
  provider: string;
  /** The provider's model name (of a pool: its first target's). */
  model: string;
  /**
   * Several upstreams serving this name, load-balanced by weight; absent for a single upstream. The registry turns
   * each target into a deployment of its own provider and model (same name, pricing and limits).
   */
  pool?: { targets: Array<{ provider: string; model: string; weight: number }>; cooldownMs: number };
  fallbacks: string[];
  maxInputTokens: number | null;
  kind: "chat" | "embedding";
  /** USD per token (the config's per-million prices / 1e6); null = no price configured, cost unknown. */
  pricing: Pricing | null;
}

export interface Pricing {
  input: number;
  output: number;
  /** Prompt tokens the provider served from its prompt cache (defaults to the input price). */
  cachedInput: number;
  /** Prompt tokens written to the provider's prompt cache (defaults to 1.25 × input: Anthropic's 5-minute cache). */
  cacheWriteInput: number;
  /** Prompt tokens written to a 1-hour prompt cache (defaults to 2 × input: Anthropic's price). */
  cacheWrite1hInput: number;
}

export interface Config {
  /** True when no DATABASE_URL is set: PGlite under dataDir and in-process limiter/cache (single process). */
  embedded: boolean;
  server: {
    host: string;
    port: number;
    workers: number;
    bodyLimitBytes: number;
    requestTimeoutMs: number;
    shutdownGraceSeconds: number;
    /**
     * Proxies in front of the service that append to X-Forwarded-For (TRUSTED_PROXY_HOPS): the client address is the
     * entry that many from the right; 0 = the socket's peer, the header ignored (a client can write anything in it).
     */
    trustedProxyHops: number;
  };
  /** Admin key; null only before the embedded default has generated one (main.ts fills it in). */
  masterKey: string | null;
  dataDir: string;
  /** `waitSeconds`: how long start-up waits for an unreachable PostgreSQL before it gives up (DATABASE_WAIT_SECONDS). */
  database: { url: string | null; ca: string | null; waitSeconds: number };
  /**
   * `url`: REDIS_URL (with `cluster`, one or more comma-separated seed nodes). `cluster`: REDIS_CLUSTER, speak the
   * Redis Cluster protocol (default false).
   */
  redis: { url: string | null; tlsCa: string | null; cluster: boolean };
  chroma: { url: string | null };
  kbDir: string;
  logLevel: (typeof LOG_LEVELS)[number];
  /** Workers write log lines in 4 KiB blocks, at least this often; 0 = every line at once. */
  logFlushMs: number;
  providers: Record<string, ProviderConfig>;
  models: DeploymentConfig[];
  /** Zero-config path: unknown model names go unchanged to this provider. */
  passthroughProvider: string | null;
  embeddingModel: string | null;
  limits: {
    failureMode: "fail-open" | "fail-closed";
    replicas: number;
    defaultCompletionTokens: number;
    key: Budget;
    team: Budget;
  };
  cache: { enabled: boolean; ttlSeconds: number; scope: "team" | "key" | "global"; maxEntries: number };
  /** Usage rows older than this many days are deleted (null: kept forever). */
  usage: { retentionDays: number | null };
  contentPolicy: { blockedPatterns: RegExp[]; maxInputTokens: number | null };
  pii: {
    enabled: boolean;
    names: "gazetteer" | "compromise" | "off";
    entities: Record<PiiEntity, boolean>;
    allowList: string[];
  };
  rag: {
    collection: string;
    topK: number;
    minScore: number;
    contextTokens: number;
    chunkTokens: number;
    chunkOverlap: number;
  };
}

export interface LoadConfigOptions {
  env: Record<string, string | undefined>;
  /** YAML text of the config file; read from CONFIG_FILE when absent. */
  fileText?: string;
}

/** A config path as the problems write it: `models[0].targets[1].provider`. */
function pathText(segments: readonly PropertyKey[]): string {
  let out = "";
  for (const seg of segments) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out || "(root)";
}

/** The parts of a zod schema's definition the hints below walk (zod 4's `_zod.def`). */
interface SchemaDef {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  keyType?: z.ZodType;
  valueType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  discriminator?: string;
  entries?: Record<string, string>;
  values?: unknown[];
}
const defOf = (schema: z.ZodType) => schema._zod.def as unknown as SchemaDef;

/** The schema under defaults, optionals and pipes; a discriminated union's option that `value` selects. */
function resolveSchema(schema: z.ZodType, value: unknown): z.ZodType | null {
  let s = schema;
  for (;;) {
    const def = defOf(s);
    if (def.innerType) s = def.innerType;
    else if (def.type === "pipe" && def.in) s = def.in;
    else if (def.type === "union" && def.discriminator && def.options) {
      const tag = (value as Record<string, unknown> | null)?.[def.discriminator];
      const option = def.options.find((o) =>
        defOf(defOf(o).shape?.[def.discriminator!] ?? o).values?.includes(tag),
      );
      return option ?? null;
    } else return s;
  }
}

/** The keys accepted at `path` of `data` (an object's fields, an enum-keyed record's keys); null if unknown. */
function allowedKeysAt(schema: z.ZodType, data: unknown, path: readonly PropertyKey[]): string[] | null {
  let s: z.ZodType | null = resolveSchema(schema, data);
  let value = data;
  for (const seg of path) {
    if (!s) return null;
    const def = defOf(s);
    const next: z.ZodType | undefined =
      def.type === "object"
        ? def.shape?.[String(seg)]
        : def.type === "record"
          ? def.valueType
          : def.type === "array"
            ? def.element
            : undefined;
    if (!next) return null;
    value = (value as Record<PropertyKey, unknown> | null)?.[seg];
    s = resolveSchema(next, value);
  }
  if (!s) return null;
  const def = defOf(s);
  if (def.type === "object" && def.shape) return Object.keys(def.shape);
  if (def.type === "record" && def.keyType) {
    const keyDef = defOf(def.keyType);
    if (keyDef.type === "enum" && keyDef.entries) return Object.values(keyDef.entries);
  }
  return null;
}

/** Levenshtein distance (short strings: config keys). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** Keys people write that the file spells otherwise, with the fix. */
const KEY_HINTS: Record<string, string> = {
  api_key:
    "use api_key_env (the name of an environment variable holding the key); secrets never live in the config file",
  apiKey:
    "use api_key_env (the name of an environment variable holding the key); secrets never live in the config file",
};

/** The fix for an unknown key: a known spelling of it, the closest allowed key, or the allowed keys. */
function unknownKeyHint(key: string, allowed: string[] | null): string {
  if (Object.hasOwn(KEY_HINTS, key) && allowed?.includes("api_key_env")) return KEY_HINTS[key];
  if (!allowed?.length) return "remove it";
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of allowed) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  if (best && bestDistance <= 2) return `did you mean ${best}?`;
  return `allowed here: ${allowed.join(", ")}`;
}

function issuesToProblems(prefix: string, error: z.ZodError, schema: z.ZodType, data: unknown): string[] {
  return error.issues.flatMap((issue) => {
    if (issue.code === "unrecognized_keys") {
      const allowed = allowedKeysAt(schema, data, issue.path);
      return issue.keys.map(
        (key) => `${prefix}${pathText([...issue.path, key])}: unknown key; ${unknownKeyHint(key, allowed)}`,
      );
    }
    if (issue.code === "invalid_key") {
      const expected = issue.issues.map((i) => i.message).join("; ");
      return [`${prefix}${pathText(issue.path)}: not a valid name here; expected ${expected}`];
    }
    return [`${prefix}${pathText(issue.path)}: ${issue.message}`];
  });
}

/**
 * Texts on which a pattern that can match without reading a character shows it: "" (`a*`, `^`, `(?!x)`) and plain
 * prose (`\b`, `\B`). Such a pattern blocks every request (or nearly), so it is refused at start.
 */
const EMPTY_MATCH_PROBES = ["", "Hello, world.\n"];

/**
 * `/re/flags` is a regex, anything else a case-insensitive literal whose spaces match any run of white space
 * ("Project  Falcon", a line break, a no-break space). Returns the problem (without the config path) for a pattern
 * that is not one: a bad regex, a blank literal, a regex that matches empty text (either would block every request).
 * None quotes the pattern (a pattern may be secret): the caller names it by its index, and a bad regex's problem
 * gives the regex engine's reason alone, after "invalid regex" (where stacks/config.ts cuts problems off).
 */
export function compileBlockedPattern(pattern: string): RegExp | string {
  const m = /^\/(.+)\/([a-z]*)$/s.exec(pattern);
  if (!m) {
    const text = pattern.trim();
    if (!text) return "the pattern is blank (white space only), so it would block every request; remove it";
    const literal = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/\s+/g, "\\s+");
    return new RegExp(literal, "iu");
  }
  const flags = m[2].includes("u") ? m[2] : `${m[2]}u`;
  let re: RegExp;
  try {
    re = new RegExp(m[1], flags.replace(/g|y/g, ""));
  } catch (error) {
    // V8 writes "Invalid regular expression: /<source>/<flags>: <reason>": keep the reason only.
    const message = (error as Error).message;
    const reason = message.slice(message.lastIndexOf(": ") + 2);
    const safe = reason && !reason.includes(m[1]) ? reason : "not a valid regular expression";
    return `invalid regex (${safe}); fix the pattern (not quoted here: a pattern may be secret)`;
  }
  // Every match, not only the leftmost: `/H|\b/` matches "H" first and empty text after it.
  const all = new RegExp(re.source, `${re.flags}g`);
  for (const probe of EMPTY_MATCH_PROBES)
    for (const match of probe.matchAll(all))
      if (match[0] === "")
        return "the regex matches empty text, so it would block every request; make it match at least one character (a+ rather than a*)";
  return re;
}

const MOCK_MODELS: DeploymentConfig[] = [
  {
    name: "mock-chat",
    provider: "mock",
    model: "mock-chat",
    fallbacks: [],
    maxInputTokens: null,
    kind: "chat",
    pricing: null,
  },
  {
    name: "mock-embedding",
    provider: "mock",
    model: "mock-embedding",
    fallbacks: [],
    maxInputTokens: null,
    kind: "embedding",
    pricing: null,
  },
];

type EnvValues = z.infer<typeof envSchema>;
type FileValues = z.infer<typeof fileSchema>;
type FileSection = keyof FileValues;
type DeploymentInput = z.infer<typeof deploymentSchema>;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The variables that parse, when some do not: the checks across variables still run on them. */
function partialEnv(rawEnv: Record<string, string>): EnvValues {
  const out: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(envSchema.shape)) {
    const r = (schema as z.ZodType).safeParse(rawEnv[key]);
    if (r.success && r.data !== undefined) out[key] = r.data;
  }
  return out as EnvValues;
}

/**
 * The parts of a file that failed the schema which still parse: each section on its own (a failed one holds its
 * default, on which the checks below find nothing), each provider and each model on its own. The checks across
 * sections run on them, so a start lists every problem at once, not the schema's first and the rest after a fix.
 */
function partialFile(raw: unknown): { file: FileValues; modelIndex: number[] } {
  const obj = isPlainObject(raw) ? raw : {};
  const out: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(fileSchema.shape) as Array<[FileSection, z.ZodType]>) {
    const r = schema.safeParse(obj[key]);
    out[key] = r.success ? r.data : schema.parse(undefined);
  }
  const file = out as FileValues;
  let modelIndex = file.models.map((_, i) => i);
  if (!fileSchema.shape.models.safeParse(obj.models).success && Array.isArray(obj.models)) {
    const models: DeploymentInput[] = [];
    modelIndex = [];
    obj.models.forEach((m: unknown, i: number) => {
      const r = deploymentSchema.safeParse(m);
      if (r.success) {
        models.push(r.data);
        modelIndex.push(i);
      }
    });
    file.models = models;
  }
  if (!fileSchema.shape.providers.safeParse(obj.providers).success && isPlainObject(obj.providers)) {
    file.providers = {};
    for (const [name, p] of Object.entries(obj.providers)) {
      const r = providerSchema.safeParse(p);
      if (PROVIDER_NAME.test(name) && r.success) file.providers[name] = r.data;
    }
  }
  return { file, modelIndex };
}

/** The names a file declares under a list or map, also those that failed the schema (not "unknown" then). */
function declaredNames(raw: unknown, section: "models" | "providers"): Set<string> {
  const value = isPlainObject(raw) ? raw[section] : undefined;
  if (section === "providers") return new Set(isPlainObject(value) ? Object.keys(value) : []);
  if (!Array.isArray(value)) return new Set();
  return new Set(
    value.flatMap((m: unknown) => (isPlainObject(m) && typeof m.name === "string" ? [m.name] : [])),
  );
}

/** Parse env + config file once. Throws ConfigError listing every problem. */
export function loadConfig(opts: LoadConfigOptions): Config {
  const problems: string[] = [];
  const rawEnv: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    let v = opts.env[key];
    if (v !== undefined && SECRET_ENV.has(key)) v = cleanSecret(v).value;
    if (v !== undefined && v !== "") rawEnv[key] = v;
  }
  const envResult = envSchema.safeParse(rawEnv);
  if (!envResult.success) problems.push(...issuesToProblems("env ", envResult.error, envSchema, rawEnv));
  const env = envResult.success ? envResult.data : partialEnv(rawEnv);

  let fileText = opts.fileText;
  const configFile = opts.env.CONFIG_FILE;
  if (fileText === undefined && configFile) {
    try {
      fileText = fs.readFileSync(configFile, "utf8");
    } catch (error) {
      problems.push(`env CONFIG_FILE: cannot read ${configFile} (${(error as NodeJS.ErrnoException).code})`);
    }
  }
  let fileRaw: unknown = {};
  if (fileText !== undefined) {
    try {
      fileRaw = parseYaml(fileText) ?? {};
      // A file with nothing in it would serve no models (the built-in ones exist only without a file), silently.
      if (configFile && isPlainObject(fileRaw) && Object.keys(fileRaw).length === 0) {
        problems.push(
          `config file ${configFile}: no models configured (is it empty?); add models: (and providers:), or remove CONFIG_FILE to use the built-in mock models` +
            (rawEnv.OPENAI_API_KEY ? " and the zero-config OpenAI path (OPENAI_API_KEY is set)" : ""),
        );
      }
    } catch (error) {
      problems.push(`config file: not valid YAML (${(error as Error).message.split("\n")[0]})`);
    }
  }
  const fileResult = fileSchema.safeParse(fileRaw);
  let file: FileValues;
  /** Each parsed model's index in the file (all of them, unless some failed the schema). */
  let modelIndex: number[];
  if (fileResult.success) {
    file = fileResult.data;
    modelIndex = file.models.map((_, i) => i);
  } else {
    problems.push(...issuesToProblems("config ", fileResult.error, fileSchema, fileRaw));
    ({ file, modelIndex } = partialFile(fileRaw));
  }
  const declaredModels = declaredNames(fileRaw, "models");
  const declaredProviders = declaredNames(fileRaw, "providers");

  const embedded = rawEnv.DATABASE_URL === undefined;
  const providers: Record<string, ProviderConfig> = {};
  for (const [name, p] of Object.entries(file.providers)) {
    if (p.type === "mock") {
      providers[name] = { name, type: "mock", latencyMs: p.latency_ms };
      continue;
    }
    const apiKeyEnv = p.api_key_env;
    const secret = apiKeyEnv && opts.env[apiKeyEnv] !== undefined ? cleanSecret(opts.env[apiKeyEnv]) : null;
    const apiKey = secret?.value || null;
    if (apiKeyEnv && !apiKey) {
      problems.push(`config providers.${name}.api_key_env: environment variable ${apiKeyEnv} is not set`);
    } else if (secret?.problem) {
      problems.push(`env ${apiKeyEnv} (providers.${name}.api_key_env): ${secret.problem}`);
    }
    const common = {
      name,
      baseUrl: p.base_url.replace(/\/+$/, ""),
      apiKey,
      headers: p.headers,
      timeoutMs: p.timeout_ms,
      maxRetries: p.max_retries,
      connections: p.connections,
    };
    if (p.type === "anthropic") {
      providers[name] = {
        ...common,
        type: "anthropic",
        version: p.version,
        defaultMaxTokens: p.default_max_tokens,
        promptCaching: p.prompt_caching,
      };
      continue;
    }
    providers[name] = {
      ...common,
      type: "openai",
      authHeader: p.auth_header,
      query: p.query,
    };
  }

  file.models.forEach((m, k) => {
    const i = modelIndex[k];
    if (m.targets && (m.provider || m.model)) {
      problems.push(
        `config models[${i}]: give either provider (and model) for one upstream or targets for several, not both`,
      );
    } else if (!m.targets && !m.provider) {
      problems.push(
        `config models[${i}].provider: required (or targets: a list of {provider, model, weight})`,
      );
    }
    if (m.cooldown_seconds !== undefined && (m.targets?.length ?? 0) < 2) {
      problems.push(`config models[${i}].cooldown_seconds: only applies to targets (two or more upstreams)`);
    }
  });
  let models: DeploymentConfig[] = file.models.map((m) => ({
    name: m.name,
    provider: m.targets?.[0].provider ?? m.provider ?? "",
    model: m.targets?.[0].model ?? m.model ?? m.name,
    ...(m.targets && m.targets.length > 1
      ? {
          pool: {
            targets: m.targets.map((t) => ({
              provider: t.provider,
              model: t.model ?? m.name,
              weight: t.weight,
            })),
            cooldownMs: (m.cooldown_seconds ?? 10) * 1000,
          },
        }
      : {}),
    fallbacks: m.fallbacks,
    maxInputTokens: m.max_input_tokens ?? null,
    kind: m.kind,
    pricing: m.pricing
      ? {
          input: m.pricing.input_per_mtok / 1e6,
          output: m.pricing.output_per_mtok / 1e6,
          cachedInput: (m.pricing.cached_input_per_mtok ?? m.pricing.input_per_mtok) / 1e6,
          cacheWriteInput: (m.pricing.cache_write_input_per_mtok ?? m.pricing.input_per_mtok * 1.25) / 1e6,
          cacheWrite1hInput: (m.pricing.cache_write_1h_input_per_mtok ?? m.pricing.input_per_mtok * 2) / 1e6,
        }
      : null,
  }));
  let passthroughProvider: string | null = null;
  if (fileText === undefined) {
    // No config file: the mock deployments for demos, and the zero-config OpenAI path when a key is set.
    providers.mock ??= { name: "mock", type: "mock", latencyMs: 0 };
    models = [...MOCK_MODELS];
    modelIndex = models.map((_, i) => i);
    const keyProblem = env.OPENAI_API_KEY ? cleanSecret(env.OPENAI_API_KEY).problem : null;
    if (keyProblem) problems.push(`env OPENAI_API_KEY: ${keyProblem}`);
    if (env.OPENAI_API_KEY) {
      providers.openai = {
        name: "openai",
        type: "openai",
        baseUrl: (env.OPENAI_BASE_URL ?? "https://api.openai.com/v1").replace(/\/+$/, ""),
        apiKey: env.OPENAI_API_KEY,
        authHeader: "authorization",
        query: {},
        headers: {},
        timeoutMs: 60_000,
        maxRetries: 1,
        connections: 128,
      };
      passthroughProvider = "openai";
    }
  }

  const names = new Set<string>();
  models.forEach((m, k) => {
    const i = modelIndex[k];
    if (names.has(m.name)) problems.push(`config models[${i}].name: duplicate model name "${m.name}"`);
    names.add(m.name);
    const upstreams = m.pool
      ? m.pool.targets.map((t, j) => ({ where: `models[${i}].targets[${j}].provider`, provider: t.provider }))
      : m.provider
        ? [{ where: `models[${i}].provider`, provider: m.provider }]
        : [];
    for (const { where, provider } of upstreams) {
      if (!providers[provider]) {
        // A provider declared in the file that failed the schema has its own problem listed.
        if (declaredProviders.has(provider)) continue;
        problems.push(
          `config ${where}: unknown provider "${provider}" (declare it under providers:, or use one of: ${Object.keys(providers).join(", ") || "none"})`,
        );
      } else if (m.kind === "embedding" && providers[provider].type === "anthropic") {
        problems.push(
          `config ${where}: "${provider}" is an anthropic provider, which has no embeddings API (route embedding models to an openai provider)`,
        );
      }
    }
  });
  const kindOf = new Map(models.map((m) => [m.name, m.kind]));
  models.forEach((m, k) =>
    m.fallbacks.forEach((f, j) => {
      const i = modelIndex[k];
      if (!names.has(f)) {
        // A model declared in the file that failed the schema has its own problem listed.
        if (!declaredModels.has(f))
          problems.push(`config models[${i}].fallbacks[${j}]: unknown model "${f}"`);
      } else if (kindOf.get(f) !== m.kind)
        problems.push(
          `config models[${i}].fallbacks[${j}]: "${f}" is a ${kindOf.get(f)} model; a ${m.kind} model falls back to ${m.kind} models only`,
        );
      if (f === m.name)
        problems.push(`config models[${i}].fallbacks[${j}]: a model cannot fall back to itself`);
    }),
  );
  const embeddingModel =
    file.embedding_model ?? (models.some((m) => m.name === "mock-embedding") ? "mock-embedding" : null);
  if (
    file.embedding_model &&
    !names.has(file.embedding_model) &&
    !declaredModels.has(file.embedding_model) &&
    !passthroughProvider
  ) {
    problems.push(`config embedding_model: unknown model "${file.embedding_model}"`);
  } else if (
    file.embedding_model &&
    names.has(file.embedding_model) &&
    kindOf.get(file.embedding_model) !== "embedding"
  ) {
    problems.push(
      `config embedding_model: "${file.embedding_model}" is not an embedding model (set kind: embedding on it)`,
    );
  }

  const blockedPatterns: RegExp[] = [];
  file.content_policy.blocked_patterns.forEach((p, i) => {
    const compiled = compileBlockedPattern(p);
    if (typeof compiled === "string")
      problems.push(`config content_policy.blocked_patterns[${i}]: ${compiled}`);
    else blockedPatterns.push(compiled);
  });

  if (file.rag.chunk_overlap >= file.rag.chunk_tokens) {
    problems.push("config rag.chunk_overlap: must be smaller than rag.chunk_tokens");
  }
  if (!embedded && rawEnv.PROXY_MASTER_KEY === undefined) {
    problems.push(
      "env PROXY_MASTER_KEY: required when DATABASE_URL is set (at least 32 characters; generate one: openssl rand -hex 32)",
    );
  }
  if (env.REDIS_CLUSTER && rawEnv.REDIS_URL === undefined) {
    problems.push("env REDIS_CLUSTER: needs REDIS_URL (a seed node of the cluster)");
  }
  const redisProblem = env.REDIS_URL ? redisUrlProblem(env.REDIS_URL, env.REDIS_CLUSTER ?? false) : null;
  if (redisProblem) problems.push(`env REDIS_URL: ${redisProblem}`);
  if (problems.length) throw new ConfigError(problems);

  const entities = Object.fromEntries(PII_ENTITIES.map((e) => [e, file.pii.entities[e] ?? true])) as Record<
    PiiEntity,
    boolean
  >;
  if (file.pii.names === "off") {
    entities.PERSON = false;
    entities.LOCATION = false;
  }
  const budget = (b: z.infer<typeof budgetSchema>): Budget => ({
    requestsPerMinute: b.requests_per_minute ?? null,
    tokensPerMinute: b.tokens_per_minute ?? null,
    tokensPerDay: b.tokens_per_day ?? null,
  });
  const dataDir = path.resolve(env.DATA_DIR ?? "data");

  const config: Config = {
    embedded,
    server: {
      host: env.HOST ?? (embedded ? "127.0.0.1" : "0.0.0.0"),
      port: env.PORT ?? 8000,
      // The embedded default keeps limits and cache in process memory, so it runs one worker.
      workers: embedded ? 1 : (env.WORKERS ?? Math.max(1, os.availableParallelism())),
      bodyLimitBytes: file.server.body_limit_bytes,
      requestTimeoutMs: file.server.request_timeout_ms,
      shutdownGraceSeconds: env.SHUTDOWN_GRACE_SECONDS ?? 30,
      trustedProxyHops: env.TRUSTED_PROXY_HOPS ?? 0,
    },
    masterKey: env.PROXY_MASTER_KEY ?? null,
    dataDir,
    database: {
      url: env.DATABASE_URL ?? null,
      ca: env.DATABASE_CA ?? null,
      waitSeconds: env.DATABASE_WAIT_SECONDS ?? 30,
    },
    redis: {
      url: env.REDIS_URL ?? null,
      tlsCa: env.REDIS_TLS_CA ?? null,
      cluster: env.REDIS_CLUSTER ?? false,
    },
    chroma: { url: env.CHROMA_URL ?? null },
    kbDir: path.resolve(env.KB_DIR ?? path.join(dataDir, "knowledge-base")),
    logLevel: env.LOG_LEVEL ?? "info",
    logFlushMs: env.LOG_FLUSH_MS ?? 200,
    providers,
    models,
    passthroughProvider,
    embeddingModel,
    limits: {
      failureMode: env.RATE_LIMIT_FAILURE_MODE ?? file.limits.failure_mode ?? "fail-open",
      replicas: env.REPLICAS ?? file.limits.replicas ?? 1,
      defaultCompletionTokens: file.limits.default_completion_tokens,
      key: budget(file.limits.key),
      team: budget(file.limits.team),
    },
    // USAGE_RETENTION_DAYS=0 turns a retention set in the file off.
    usage: {
      retentionDays:
        env.USAGE_RETENTION_DAYS !== undefined ? env.USAGE_RETENTION_DAYS || null : file.usage.retention_days,
    },
    cache: {
      enabled: env.CACHE_ENABLED ?? file.cache.enabled ?? false,
      ttlSeconds: env.CACHE_TTL_SECONDS ?? file.cache.ttl_seconds ?? 300,
      scope: file.cache.scope,
      maxEntries: file.cache.max_entries,
    },
    contentPolicy: {
      blockedPatterns,
      maxInputTokens: file.content_policy.max_input_tokens ?? null,
    },
    pii: {
      enabled: file.pii.enabled,
      names: file.pii.names,
      entities,
      allowList: file.pii.allow_list,
    },
    rag: {
      collection: file.rag.collection,
      topK: file.rag.top_k,
      minScore: file.rag.min_score,
      contextTokens: file.rag.context_tokens,
      chunkTokens: file.rag.chunk_tokens,
      chunkOverlap: file.rag.chunk_overlap,
    },
  };
  return deepFreeze(config);
}

/**
 * What `--embedded` (the flag `npm start` passes) ignores from the environment: the embedded default runs its own
 * database (PGlite under DATA_DIR) and keeps limits and cache in process memory, whatever a shell has exported.
 */
export const EMBEDDED_IGNORED_ENV = [
  "DATABASE_URL",
  "DATABASE_CA",
  "REDIS_URL",
  "REDIS_CLUSTER",
  "REDIS_TLS_CA",
];

/** The environment for `--embedded`, and the names it dropped (set and not empty) for the one line saying so. */
export function embeddedEnv(env: Record<string, string | undefined>): {
  env: Record<string, string | undefined>;
  ignored: string[];
} {
  const out = { ...env };
  const ignored: string[] = [];
  for (const name of EMBEDDED_IGNORED_ENV) {
    if (out[name] !== undefined && out[name] !== "") ignored.push(name);
    delete out[name];
  }
  return { env: out, ignored };
}

/** Settings that load but do not do what they say: one line each for the primary to print at start. */
export function configWarnings(env: Record<string, string | undefined>, config: Config): string[] {
  const warnings: string[] = [];
  if (config.embedded && env.WORKERS && env.WORKERS.trim() !== "1") {
    warnings.push(
      `env WORKERS=${env.WORKERS} is ignored: the embedded default runs one worker (its limits and cache live in process memory); set DATABASE_URL (and REDIS_URL) to run several`,
    );
  }
  if (config.models.length === 0 && !config.passthroughProvider) {
    warnings.push(
      "config: no models configured, so every model request is refused; add models: to the config file",
    );
  }
  return warnings;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !(value instanceof RegExp)) {
    Object.values(value).forEach(deepFreeze);
    Object.freeze(value);
  }
  return value;
}
