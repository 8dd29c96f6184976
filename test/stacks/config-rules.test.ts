/**
 * Config rules that stop a stack before anything is created, where the cloud, Kubernetes or the proxy itself would
 * otherwise fail late (inside an apply, or as crash-looping pods after a successful `pulumi up`). Pure: the parser
 * and validator without mocks, plus a few runs of the real program for what reaches the resources.
 */
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { budgetReplicas, MAX_NAMESPACE_LENGTH, proxyConfigYaml } from "../../stacks/app/decisions";
import { rdsMaxAllocatedStorage } from "../../stacks/aws/postgres";
import { CLOUD_SQL_MAX_LOG_DAYS, gcpBackupConfiguration } from "../../stacks/gcp/postgres";
import { isIpv4Cidr } from "../../stacks/cidr";
import {
  RDS_MAX_STORAGE_GB,
  StackConfigError,
  closestKey,
  parseConfigValues,
  parseStackConfig,
  type RawConfig,
} from "../../stacks/config";
import { K8S, all, at, configProblems, isSecretInput, one, run } from "./helpers";

const AWS: RawConfig = { cloud: "aws", apiAllowedCidrs: '["203.0.113.0/24"]' };
const aws = { region: "eu-west-1" };
const AZURE: RawConfig = { cloud: "azure", apiAllowedCidrs: '["203.0.113.0/24"]' };
const azure = { region: "westeurope" };
const GCP: RawConfig = { cloud: "gcp", apiAllowedCidrs: '["203.0.113.0/24"]' };
const gcp = { region: "europe-west1", gcpProject: "acme-llm-proxy-prod" };

const problems = (raw: RawConfig, provider = aws) => configProblems(raw, provider);

describe("values that become the proxy's environment stay in the service's ranges", () => {
  it.each([
    [
      "requestTimeoutSeconds",
      "3601",
      "outside 1-3600, the range the proxy accepts for SHUTDOWN_GRACE_SECONDS",
      "3600",
    ],
    [
      "cacheTtlSeconds",
      "2592001",
      "outside 1-2592000, the range the proxy accepts for CACHE_TTL_SECONDS",
      "2592000",
    ],
    ["workers", "257", "outside 1-256, the range the proxy accepts for WORKERS", "256"],
    ["maxReplicas", "10001", "outside 1-10000, the range the proxy accepts for REPLICAS", "10000"],
  ])("%s=%s is refused with the service's bound", (k, value, text, fix) => {
    // workers=257 also needs the memory for them; give it so only the range is reported.
    const extra: RawConfig = k === "workers" ? { memoryRequestMi: "40000", memoryLimitMi: "40000" } : {};
    expect(problems({ ...AWS, ...extra, [k]: value })).toEqual([
      `llm-proxy:${k} is ${value}, ${text} (its pods would not start). Set it with: pulumi config set llm-proxy:${k} ${fix}.`,
    ]);
  });

  it("the largest values the service accepts pass", () => {
    const cfg = parseStackConfig({ ...AWS, requestTimeoutSeconds: "3600", cacheTtlSeconds: "2592000" }, aws);
    expect(cfg.proxy.requestTimeoutSeconds).toBe(3600);
  });
});

describe("proxyConfig: merged by model name, checked by the service's loader, before any resource", () => {
  const models = "models:\n  - { name: my-model, provider: openai, model: gpt-4.1 }\n";

  it("models in proxyConfig are added to the generated ones (embedding_model keeps its model)", () => {
    const s = parseStackConfig({ ...AWS, proxyConfig: models }, aws, {
      openaiApiKey: pulumi.output("sk"),
    }).proxy;
    const file = parseYaml(proxyConfigYaml(s, ["OPENAI_API_KEY"]));
    expect(file.models.map((m: { name: string }) => m.name)).toEqual([
      "gpt-4o-mini",
      "gpt-4o",
      "text-embedding-3-small",
      "my-model",
    ]);
    expect(file.embedding_model).toBe("text-embedding-3-small");
  });

  it("a model with a generated name replaces that model", () => {
    const s = parseStackConfig(
      {
        ...AWS,
        proxyConfig: "models:\n  - { name: gpt-4o, provider: openai, model: gpt-4o-2024-11-20 }\n",
      },
      aws,
      { openaiApiKey: pulumi.output("sk") },
    ).proxy;
    const file = parseYaml(proxyConfigYaml(s, ["OPENAI_API_KEY"]));
    expect(file.models.filter((m: { name: string }) => m.name === "gpt-4o")).toEqual([
      { name: "gpt-4o", provider: "openai", model: "gpt-4o-2024-11-20" },
    ]);
    expect(file.models).toHaveLength(3);
  });

  it("a file the service would refuse is a config error naming llm-proxy:proxyConfig and the service's message", () => {
    // No provider key is set, so the generated file has no providers: the model's provider is unknown.
    const p = problems({ ...AWS, proxyConfig: models });
    expect(p).toEqual([
      expect.stringMatching(
        /^llm-proxy:proxyConfig: the proxy would refuse the merged config file \(config models\[0\]\.provider: unknown provider "openai"/,
      ),
    ]);
    expect(problems({ ...AWS, proxyConfig: "limits: { replicas: 0 }" })[0]).toMatch(
      /^llm-proxy:proxyConfig: .*config limits\.replicas: Too small/,
    );
    expect(problems({ ...AWS, proxyConfig: "unknown_section: 1" })[0]).toMatch(/^llm-proxy:proxyConfig: /);
  });

  it("a YAML error names the line, never its text (proxyConfig may be a secret)", () => {
    const p = problems({ ...AWS, proxyConfig: "limits:\n  key: sk-secret-value: 1\n" });
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^llm-proxy:proxyConfig is not valid YAML at line 2, column \d+\./);
    expect(p[0]).not.toContain("sk-secret");
    const regex = problems({ ...AWS, proxyConfig: "content_policy: { blocked_patterns: ['/Falcon(/'] }" });
    expect(regex[0]).toMatch(/content_policy\.blocked_patterns\[0\]: invalid regex\)/);
    expect(regex[0]).not.toContain("Falcon");
  });

  it("a secret proxyConfig reaches the cluster only inside a Secret", async () => {
    const r = await run({
      stack: "gcp",
      secrets: { proxyConfig: "content_policy:\n  blocked_patterns: [Project Falcon]\n" },
    });
    const file = one(r, K8S.secret, "llm-proxy-config-file");
    expect(isSecretInput(file, "stringData.config.yaml")).toBe(true);
    expect(parseYaml(at(file.inputs, "stringData")["config.yaml"]).content_policy).toEqual({
      blocked_patterns: ["Project Falcon"],
    });
    for (const res of r.resources) {
      if (res === file || res.type === "pulumi:pulumi:Stack") continue;
      expect(JSON.stringify(res.inputs), `${res.type} ${res.name}`).not.toContain("Falcon");
    }
    const pod = at(one(r, K8S.deployment, "llm-proxy-deployment").inputs, "spec.template.spec");
    expect(pod.volumes.find((v: { name: string }) => v.name === "config")).toEqual({
      name: "config",
      secret: { secretName: at(file.outputs, "metadata.name") },
    });
    for (const cm of all(r, K8S.configMap)) expect(at(cm.inputs, "data")["config.yaml"]).toBeUndefined();
  });
});

describe("budgets with Redis down: REPLICAS is the HPA maximum", () => {
  it("never over-admits: pods x workers x per-worker share <= budget at any scale", () => {
    const s = parseStackConfig({ ...AWS, minReplicas: "3", maxReplicas: "12" }, aws).proxy;
    expect(budgetReplicas(s)).toBe(12);
    expect(parseYaml(proxyConfigYaml(s, [])).limits.replicas).toBe(12);
    const fixed = parseStackConfig({ ...AWS, autoscalingEnabled: "false", replicas: "4" }, aws).proxy;
    expect(budgetReplicas(fixed)).toBe(4);
  });
});

describe("cluster and network values the clouds accept", () => {
  it("kubernetesVersion must be <major>.<minor>", () => {
    expect(problems({ ...AWS, kubernetesVersion: "v1.33" })).toEqual([
      'llm-proxy:kubernetesVersion "v1.33" is not a <major>.<minor> version. Set it with: pulumi config set llm-proxy:kubernetesVersion 1.33.',
    ]);
    expect(problems({ ...AWS, kubernetesVersion: "1.33.2" })[0]).toMatch(
      /set llm-proxy:kubernetesVersion 1\.33\.$/,
    );
    expect(parseStackConfig({ ...AWS, kubernetesVersion: "1.34" }, aws).cluster.kubernetesVersion).toBe(
      "1.34",
    );
  });

  it("CIDRs: octets 0-255 and a prefix 0-32", () => {
    for (const bad of ["999.40.0.0/16", "10.0.0.0/40", "300.1.2.0/24"])
      expect(isIpv4Cidr(bad), bad).toBe(false);
    expect(isIpv4Cidr("10.40.0.0/16")).toBe(true);
    expect(problems({ ...AWS, networkCidr: "999.40.0.0/16" })).toEqual([
      expect.stringMatching(/^llm-proxy:networkCidr "999\.40\.0\.0\/16" is not an IPv4 CIDR/),
    ]);
    expect(problems({ ...AWS, apiAllowedCidrs: '["300.1.2.0/24"]' })).toEqual([
      expect.stringMatching(/^llm-proxy:apiAllowedCidrs entry "300\.1\.2\.0\/24" is not an IPv4 CIDR/),
    ]);
  });

  it("zones: each once, at most what the cloud has; numbers set with --path are taken as strings", () => {
    expect(problems({ ...AWS, zones: '["eu-west-1a","eu-west-1a"]' })).toEqual([
      "llm-proxy:zones lists eu-west-1a more than once. List each zone once.",
    ]);
    const seven = JSON.stringify("abcdefg".split("").map((z) => `eu-west-1${z}`));
    expect(problems({ ...AWS, zones: seven })[0]).toMatch(
      /^llm-proxy:zones lists 7 zones; the network plan has room for 6/,
    );
    expect(parseStackConfig({ ...AZURE, zones: "[1,2,3]" }, azure).zones).toEqual(["1", "2", "3"]);
    expect(problems({ ...AZURE, zones: '["1","4"]' }, azure)[0]).toMatch(
      /^llm-proxy:zones lists "4": Azure zones are 1, 2, 3/,
    );
  });

  it("namespace: short enough for the names derived from it", () => {
    expect(MAX_NAMESPACE_LENGTH).toBe(51);
    expect(parseStackConfig({ ...AWS, namespace: "a".repeat(51) }, aws).proxy.namespace).toHaveLength(51);
    expect(problems({ ...AWS, namespace: "a".repeat(52) })).toEqual([
      expect.stringMatching(/^llm-proxy:namespace "a+" is 52 characters; at most 51 fit/),
    ]);
  });
});

describe("misspelled and orphaned keys", () => {
  it("an unknown key is reported with the closest known key", () => {
    expect(parseConfigValues({ maxReplica: "30" }).problems).toEqual([
      "llm-proxy:maxReplica is not a config key of this project; did you mean llm-proxy:maxReplicas? Remove it with: pulumi config rm llm-proxy:maxReplica, and set llm-proxy:maxReplicas instead.",
    ]);
    expect(closestKey("ingresHost")).toBe("ingressHost");
    expect(closestKey("somethingElseEntirely")).toBeUndefined();
  });

  it("an unknown key set on a stack stops the program", async () => {
    await expect(run({ stack: "aws", overrides: { "llm-proxy:maxReplica": "30" } })).rejects.toThrow(
      /llm-proxy:maxReplica is not a config key of this project; did you mean llm-proxy:maxReplicas\?/,
    );
  });

  it("ingress class or TLS secret without a host", () => {
    expect(problems({ ...AWS, ingressTlsSecret: "tls", ingressClassName: "nginx" })).toEqual([
      expect.stringMatching(/^llm-proxy:ingressClassName is set but llm-proxy:ingressHost is empty/),
      expect.stringMatching(/^llm-proxy:ingressTlsSecret is set but llm-proxy:ingressHost is empty/),
    ]);
  });
});

describe("the error type", () => {
  it("is a Pulumi RunError, so the host prints the message without a stack trace", () => {
    let caught: unknown;
    try {
      parseStackConfig({ ...AWS, maxReplicas: "x" }, aws);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(StackConfigError);
    expect(pulumi.RunError.isInstance(caught)).toBe(true);
    expect((caught as Error).message).toMatch(
      /^Invalid llm-proxy stack config:\n {2}- llm-proxy:maxReplicas must be an integer/,
    );
  });
});

describe("replicas, disruption budget and HPA window", () => {
  it("pdbMinAvailable 0 with 2 or more replicas lets every pod go at once, like maxUnavailable >= replicas", () => {
    expect(problems({ ...AWS, pdbMinAvailable: "0" })).toEqual([
      "llm-proxy:pdbMinAvailable is 0, which lets every pod be evicted at once (llm-proxy:minReplicas is 3). Set it to at least 1 (e.g. 2).",
    ]);
    expect(parseStackConfig({ ...AWS, pdbMinAvailable: "0", allowNonHa: "true" }, aws).proxy.pdb).toEqual({
      minAvailable: 0,
    });
  });

  it("scaleDownStabilizationSeconds at most 3600", () => {
    expect(problems({ ...AWS, scaleDownStabilizationSeconds: "3601" })).toEqual([
      expect.stringMatching(
        /^llm-proxy:scaleDownStabilizationSeconds is 3601, above the 3600 seconds Kubernetes allows/,
      ),
    ]);
  });
});

describe("database and image values the clouds accept", () => {
  it("postgresVersion is a major version", () => {
    expect(problems({ ...AWS, postgresVersion: "16.4" })).toEqual([
      expect.stringMatching(
        /^llm-proxy:postgresVersion "16\.4" is not a PostgreSQL major version.*set llm-proxy:postgresVersion 16\.$/,
      ),
    ]);
    expect(parseStackConfig({ ...AWS, postgresVersion: "17" }, aws).postgres.version).toBe("17");
  });

  it("chromaImage pins a tag or digest (a registry port is not a tag)", () => {
    expect(problems({ ...AWS, chromaImage: "registry.local:5000/chroma" })).toEqual([
      'llm-proxy:chromaImage "registry.local:5000/chroma" has no tag or digest. Pin one, e.g. registry.local:5000/chroma:1.0.20.',
    ]);
    expect(
      parseStackConfig({ ...AWS, chromaImage: "chromadb/chroma@sha256:abc" }, aws).proxy.chromaImage,
    ).toBe("chromadb/chroma@sha256:abc");
  });

  it("Azure backups kept 7-35 days", () => {
    expect(problems({ ...AZURE, postgresBackupDays: "3" }, azure)).toEqual([
      "llm-proxy:postgresBackupDays is 3, outside the 7-35 days Azure Database for PostgreSQL keeps backups. Set it with: pulumi config set llm-proxy:postgresBackupDays 7.",
    ]);
    expect(parseStackConfig({ ...AWS, postgresBackupDays: "3" }, aws).postgres.backupDays).toBe(3);
  });

  it("GCP backups kept 2-35 days: Cloud SQL keeps fewer days of logs than backups, and at least one", () => {
    expect(problems({ ...GCP, postgresBackupDays: "1" }, gcp)).toEqual([
      "llm-proxy:postgresBackupDays is 1: Cloud SQL must keep more backups than days of point-in-time recovery logs, and at least 1 day of logs, so it needs 2 or more. Set it with: pulumi config set llm-proxy:postgresBackupDays 2.",
    ]);
    expect(parseStackConfig({ ...GCP, postgresBackupDays: "2" }, gcp).postgres.backupDays).toBe(2);
    // Only Cloud SQL has the rule.
    expect(parseStackConfig({ ...AWS, postgresBackupDays: "1" }, aws).postgres.backupDays).toBe(1);
    // Every value the validator lets through is one Cloud SQL accepts: logs 1-7 days, fewer than the backups.
    for (let days = 2; days <= 35; days++) {
      const b = gcpBackupConfiguration(days);
      expect(b.backupRetentionSettings.retainedBackups, `${days}`).toBe(days);
      expect(b.transactionLogRetentionDays, `${days}`).toBeGreaterThanOrEqual(1);
      expect(b.transactionLogRetentionDays, `${days}`).toBeLessThanOrEqual(CLOUD_SQL_MAX_LOG_DAYS);
      expect(b.transactionLogRetentionDays, `${days}`).toBeLessThan(
        b.backupRetentionSettings.retainedBackups,
      );
    }
    expect(gcpBackupConfiguration(7).transactionLogRetentionDays).toBe(6);
    expect(gcpBackupConfiguration(14).transactionLogRetentionDays).toBe(7);
  });

  it("GCP: a week of backups reaches Cloud SQL with six days of logs", async () => {
    const r = await run({ stack: "gcp", overrides: { postgresBackupDays: "7" } });
    const sql = one(r, "gcp:sql/databaseInstance:DatabaseInstance");
    expect(at(sql.inputs, "settings.backupConfiguration")).toMatchObject({
      pointInTimeRecoveryEnabled: true,
      transactionLogRetentionDays: 6,
      backupRetentionSettings: { retainedBackups: 7, retentionUnit: "COUNT" },
    });
    await expect(run({ stack: "gcp", overrides: { postgresBackupDays: "1" } })).rejects.toThrow(
      /llm-proxy:postgresBackupDays is 1: Cloud SQL must keep more backups than days of point-in-time recovery logs/,
    );
  });

  it("RDS storage and its autoscaling ceiling stay within 64 TiB", () => {
    expect(rdsMaxAllocatedStorage(100)).toBe(400);
    expect(rdsMaxAllocatedStorage(20_000)).toBe(RDS_MAX_STORAGE_GB);
    expect(problems({ ...AWS, postgresStorageGb: "70000" })).toEqual([
      expect.stringMatching(/^llm-proxy:postgresStorageGb is 70000, above the 65536 GiB/),
    ]);
  });
});
