/**
 * The environment contract between the app component and the service: every variable the Deployment sets
 * (directly, from the Secret via envFrom, or from the ConfigMap) is one service/config.ts reads or a provider
 * `*_API_KEY`, and loadConfig accepts the environment plus the ConfigMap's config file.
 */
import { describe, expect, it } from "vitest";
import { sslOptions } from "../../service/adapters/postgres";
import { ConfigError, ENV_VARS, isProviderKeyEnv, loadConfig } from "../../service/config";
import { SERVICE_ENV_RANGES } from "../../stacks/config";
import type { OfflineRunResult } from "../../scripts/offline-run";
import { K8S, all, at, one, run } from "./helpers";

/** The environment a proxy pod would see, resolved from the recorded Secrets and ConfigMap. */
function podEnvironment(r: OfflineRunResult): { env: Record<string, string>; fileText: string } {
  const secret = one(r, K8S.secret, "llm-proxy-secret");
  const file = one(r, K8S.secret, "llm-proxy-config-file");
  const cm = all(r, K8S.configMap)[0];
  const secretName = at(secret.outputs, "metadata.name");
  const cmName = at(cm?.outputs, "metadata.name");
  const secretData = secret.inputs.stringData as Record<string, string>;
  const cmData = (at(cm?.inputs, "data") ?? {}) as Record<string, string>;
  const container = at(
    one(r, K8S.deployment, "llm-proxy-deployment").inputs,
    "spec.template.spec.containers",
  )[0];
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    expect(from.secretRef.name).toBe(secretName);
    Object.assign(env, secretData);
  }
  for (const e of container.env) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.configMapKeyRef) {
      expect(e.valueFrom.configMapKeyRef.name).toBe(cmName);
      env[e.name] = cmData[e.valueFrom.configMapKeyRef.key];
    } else if (e.valueFrom?.secretKeyRef) {
      expect(e.valueFrom.secretKeyRef.name).toBe(secretName);
      env[e.name] = secretData[e.valueFrom.secretKeyRef.key];
    } else throw new Error(`unexpected env source for ${e.name}`);
  }
  // The config file is mounted from its own Secret at the directory CONFIG_FILE points into.
  const configVolume = at(
    one(r, K8S.deployment, "llm-proxy-deployment").inputs,
    "spec.template.spec.volumes",
  ).find((v: { name: string }) => v.name === "config");
  expect(configVolume.secret.secretName).toBe(at(file.outputs, "metadata.name"));
  return { env, fileText: at(file.inputs, "stringData")["config.yaml"] };
}

describe("environment contract (stacks/app → service/config)", () => {
  for (const stack of ["aws", "gcp"] as const) {
    it(`${stack}: every variable the Deployment sets is read by the service, and loadConfig accepts them`, async () => {
      const r = await run({
        stack,
        secrets: { openaiApiKey: "sk-contract-test-0001", anthropicApiKey: "sk-ant-contract-0002" },
      });
      const { env, fileText } = podEnvironment(r);
      const names = Object.keys(env);
      expect(names).toEqual(
        expect.arrayContaining(["DATABASE_URL", "REDIS_URL", "PROXY_MASTER_KEY", "OPENAI_API_KEY"]),
      );
      const unknown = names.filter(
        (n) => !(ENV_VARS as readonly string[]).includes(n) && !isProviderKeyEnv(n),
      );
      expect(unknown).toEqual([]);

      const config = loadConfig({ env, fileText });
      expect(config.embedded).toBe(false);
      expect(config.server.port).toBe(8000);
      expect(config.server.workers).toBe(2);
      expect(config.server.shutdownGraceSeconds).toBe(300);
      expect(config.server.requestTimeoutMs).toBe(300_000);
      expect(config.database.url).toBe(env.DATABASE_URL);
      expect(config.redis.url).toBe(env.REDIS_URL);
      expect(config.redis.url).toMatch(/^rediss:\/\//);
      expect(config.chroma.url).toBe(env.CHROMA_URL);
      expect(config.kbDir).toBe(env.KB_DIR);
      expect(config.masterKey).toBe(env.PROXY_MASTER_KEY);
      // The HPA maximum of the stack file: the Redis-down fallback never admits more than the budget.
      expect(config.limits.replicas).toBe(24);
      expect(config.providers.openai).toMatchObject({ type: "openai", apiKey: "sk-contract-test-0001" });
      expect(config.providers.anthropic).toMatchObject({ type: "anthropic", apiKey: "sk-ant-contract-0002" });
      expect(config.models.map((m) => m.name)).toContain("claude-sonnet-5-5");
      expect(config.models.map((m) => m.name)).toContain("gpt-4o-mini");
      expect(config.embeddingModel).toBe("text-embedding-3-small");
      // Memorystore's CA reaches the service on GCP only.
      if (stack === "gcp") expect(config.redis.tlsCa).toContain("BEGIN CERTIFICATE");
      else expect(config.redis.tlsCa).toBeNull();
      // The database connection verifies the server with the cloud's CA: the chain on GCP (private IP), the chain
      // and the host name on AWS.
      expect(config.database.ca).toContain("BEGIN CERTIFICATE");
      const { ssl } = sslOptions(config.database.url!, config.database.ca);
      expect(ssl).toMatchObject({ ca: config.database.ca, rejectUnauthorized: true });
      expect("checkServerIdentity" in (ssl as object)).toBe(stack === "gcp");
    });
  }

  it("without provider keys the generated config still loads (models come from proxyConfig)", async () => {
    const r = await run({ stack: "azure" });
    const { env, fileText } = podEnvironment(r);
    const config = loadConfig({ env, fileText });
    expect(Object.keys(config.providers)).toEqual([]);
    expect(config.database.url).toMatch(/^postgres:\/\/llmproxy:/);
  });

  it("proxyConfig models replacing and adding to the generated ones: the pods' config still loads", async () => {
    const r = await run({
      stack: "aws",
      secrets: { openaiApiKey: "sk-contract-test-0003" },
      overrides: {
        proxyConfig:
          "models:\n  - { name: gpt-4o, provider: openai, model: gpt-4o-2024-11-20 }\n  - { name: mine, provider: openai }\n",
      },
    });
    const { env, fileText } = podEnvironment(r);
    const config = loadConfig({ env, fileText });
    expect(config.models.map((m) => m.name)).toEqual([
      "gpt-4o-mini",
      "gpt-4o",
      "text-embedding-3-small",
      "mine",
    ]);
    expect(config.models.find((m) => m.name === "gpt-4o")?.model).toBe("gpt-4o-2024-11-20");
    expect(config.embeddingModel).toBe("text-embedding-3-small");
  });
});

/** The variables loadConfig refuses, given `env` (a valid environment plus the probed value). */
function refused(env: Record<string, string>): string[] {
  try {
    loadConfig({ env, fileText: "" });
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems;
  }
}

describe("the stack's ranges are the service's (stacks/config.ts SERVICE_ENV_RANGES)", () => {
  for (const [name, range] of Object.entries(SERVICE_ENV_RANGES)) {
    it(`${name}: loadConfig accepts ${range.min} and ${range.max} and refuses just outside`, () => {
      expect(refused({ [name]: String(range.min) }), `${name}=${range.min}`).toEqual([]);
      expect(refused({ [name]: String(range.max) }), `${name}=${range.max}`).toEqual([]);
      expect(refused({ [name]: String(range.max + 1) })).toEqual([expect.stringMatching(`^env ${name}:`)]);
      // Below 0 is not a whole number to the service; below 1 is out of range.
      expect(refused({ [name]: String(range.min - 1) })).toEqual([expect.stringMatching(`^env ${name}:`)]);
    });
  }
});
