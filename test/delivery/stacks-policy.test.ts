// The real program, run offline for each stack file, passes every rule of the policy pack: every recorded
// resource goes through every resource rule, and the whole stack through the stack rule. The same run with
// non-HA overrides makes the rules fire, so the zero above is not a vacuous one.
import { describe, expect, it, vi } from "vitest";
import type { OfflineRunResult, OfflineStack } from "../../scripts/offline-run";
import type { Violation } from "../../policy/evaluate";

/** The types each cloud's program must create for the rules to have something to check. */
const CHECKED_TYPES: Record<OfflineStack, string[]> = {
  aws: [
    "aws:rds/instance:Instance",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:efs/fileSystem:FileSystem",
  ],
  azure: ["azure-native:dbforpostgresql:Server", "azure-native:storage:StorageAccount"],
  gcp: [
    "gcp:sql/databaseInstance:DatabaseInstance",
    "gcp:redis/instance:Instance",
    "gcp:filestore/instance:Instance",
  ],
};
const AZURE_REDIS = ["azure-native:redisenterprise:RedisEnterprise", "azure-native:redis:Redis"];
const KUBERNETES_TYPES = [
  "kubernetes:apps/v1:Deployment",
  "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
  "kubernetes:policy/v1:PodDisruptionBudget",
  "kubernetes:core/v1:PersistentVolumeClaim",
];

/** One offline run in a fresh module graph (Pulumi keeps its state in globals), checked by every rule. */
async function runAndCheck(
  stack: OfflineStack,
  overrides: Record<string, string> = {},
): Promise<{ run: OfflineRunResult; violations: Violation[] }> {
  vi.resetModules();
  const { runProgramOffline } = await import("../../scripts/offline-run.js");
  const { evaluatePolicies } = await import("../../policy/evaluate.js");
  const run = await runProgramOffline({ stack, overrides });
  return { run, violations: await evaluatePolicies(run.resources) };
}

describe.each(["aws", "azure", "gcp"] as const)("stack %s", (stack) => {
  it("passes every policy with zero violations", async () => {
    const { run, violations } = await runAndCheck(stack);
    const types = new Set(run.resources.map((r) => r.type));
    for (const t of [...CHECKED_TYPES[stack], ...KUBERNETES_TYPES])
      expect(types, `${stack} creates ${t}`).toContain(t);
    if (stack === "azure") expect(AZURE_REDIS.some((t) => types.has(t))).toBe(true);
    // The databases are protected in the recorded options, which the deletion rule reads.
    const db = run.resources.find((r) => r.type === CHECKED_TYPES[stack][0])!;
    expect(db.options.protect).toBe(true);
    expect(violations).toEqual([]);
  });
});

describe("non-HA overrides make the rules fire on the real program", () => {
  it("gcp with postgresHa=false, redisHa=false and a ZONAL filesystem", async () => {
    const { violations } = await runAndCheck("gcp", {
      "llm-proxy:allowNonHa": "true",
      "llm-proxy:postgresHa": "false",
      "llm-proxy:redisHa": "false",
      "llm-proxy:filesystemTier": "ZONAL",
    });
    expect(new Set(violations.map((v) => v.policy))).toEqual(
      new Set(["postgres-high-availability", "redis-high-availability", "filesystem-zone-redundant"]),
    );
  });
});
