// The policy pack's rules, called directly (constructing the PolicyPack would start the analyzer server):
// compliant inputs pass every rule; breaking one property makes exactly the matching rule fire.
import { describe, expect, it } from "vitest";
import * as apps from "@pulumi/kubernetes/apps/v1";
import * as autoscaling from "@pulumi/kubernetes/autoscaling/v2";
import * as k8sPolicy from "@pulumi/kubernetes/policy/v1";
import {
  evaluatePolicies,
  runResourcePolicy,
  runStackPolicy,
  unwrapSecrets,
  type RecordedResource,
} from "../../policy/evaluate";
import { policies, resourcePolicies, stackPolicies } from "../../policy/rules";
import {
  DEPLOYMENT_TYPE,
  HPA_TYPE,
  PDB_TYPE,
  allowedDisruptions,
  podDisruptionBudgets,
  selectorMatches,
} from "../../policy/rules/kubernetes";
import { DEFAULT_MIN_BACKUP_RETENTION_DAYS } from "../../policy/rules/postgres";
import { good, labels, patched, type FixtureName } from "./policy-fixtures";

const byName = new Map(resourcePolicies.map((p) => [p.name, p]));
const allGood = Object.values(good) as RecordedResource[];

describe("policy pack shape", () => {
  it("has unique kebab-case names, all mandatory", () => {
    const names = policies.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    for (const p of policies) {
      expect(p.name).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
      expect(p.enforcementLevel).toBe("mandatory");
      expect(p.description.length).toBeGreaterThan(20);
    }
    expect(names).toEqual(
      expect.arrayContaining([
        "postgres-high-availability",
        "postgres-private",
        "postgres-encrypted",
        "postgres-backed-up",
        "postgres-deletion-protected",
        "redis-high-availability",
        "redis-tls",
        "redis-auth",
        "filesystem-encrypted",
        "filesystem-zone-redundant",
        "deployment-non-root",
        "deployment-resources",
        "deployment-probes",
        "shared-volumes-rwx",
        "pdb-for-multi-replica",
      ]),
    );
  });

  it("uses the Kubernetes SDK's type tokens", () => {
    const token = (cls: unknown) => (cls as { __pulumiType: string }).__pulumiType;
    expect(DEPLOYMENT_TYPE).toBe(token(apps.Deployment));
    expect(HPA_TYPE).toBe(token(autoscaling.HorizontalPodAutoscaler));
    expect(PDB_TYPE).toBe(token(k8sPolicy.PodDisruptionBudget));
  });
});

describe("compliant inputs", () => {
  it("pass every rule on every cloud's resources", async () => {
    expect(await evaluatePolicies(allGood)).toEqual([]);
  });

  it("every fixture is checked by at least one rule (no dead fixture, no unmatched type token)", async () => {
    // Break something each rule would see: a resource with no rule applying would never report.
    const touched = new Set<string>();
    for (const r of allGood) {
      for (const p of resourcePolicies) {
        const validators = Array.isArray(p.validateResource) ? p.validateResource : [p.validateResource];
        if (validators.some((v) => (v as { __pulumiType?: string }).__pulumiType === r.type))
          touched.add(r.type);
      }
    }
    for (const r of allGood.filter((r) => ![HPA_TYPE, PDB_TYPE].includes(r.type)))
      expect(touched).toContain(r.type);
  });
});

// [rule, fixture, property path, broken value, expected message]
const breakages: [string, FixtureName, string, unknown, RegExp][] = [
  ["postgres-high-availability", "rds", "multiAz", false, /multiAz: true/],
  ["postgres-high-availability", "azurePg", "highAvailability.mode", "SameZone", /ZoneRedundant/],
  ["postgres-high-availability", "cloudSql", "settings.availabilityType", "ZONAL", /REGIONAL/],
  ["postgres-private", "rds", "publiclyAccessible", true, /publiclyAccessible/],
  ["postgres-private", "rds", "dbSubnetGroupName", undefined, /dbSubnetGroupName/],
  ["postgres-private", "azurePg", "network.publicNetworkAccess", "Enabled", /publicNetworkAccess/],
  ["postgres-private", "azurePg", "network", {}, /private access/],
  ["postgres-private", "cloudSql", "settings.ipConfiguration.ipv4Enabled", true, /ipv4Enabled: false/],
  ["postgres-private", "cloudSql", "settings.ipConfiguration.ipv4Enabled", undefined, /ipv4Enabled: false/],
  ["postgres-private", "cloudSql", "settings.ipConfiguration.privateNetwork", undefined, /privateNetwork/],
  ["postgres-encrypted", "rds", "storageEncrypted", undefined, /storageEncrypted/],
  ["postgres-encrypted", "rdsParams", "parameters", [{ name: "rds.force_ssl", value: "0" }], /force_ssl/],
  ["postgres-encrypted", "azurePgConfig", "value", "OFF", /require_secure_transport/],
  [
    "postgres-encrypted",
    "cloudSql",
    "settings.ipConfiguration.sslMode",
    "ALLOW_UNENCRYPTED_AND_ENCRYPTED",
    /sslMode/,
  ],
  ["postgres-backed-up", "rds", "backupRetentionPeriod", 0, /0 day\(s\).*>= 7/],
  ["postgres-backed-up", "rds", "backupRetentionPeriod", undefined, /1 day\(s\)/],
  ["postgres-backed-up", "azurePg", "backup.backupRetentionDays", 3, /backupRetentionDays >= 7/],
  ["postgres-backed-up", "cloudSql", "settings.backupConfiguration.enabled", false, /enabled: true/],
  [
    "postgres-backed-up",
    "cloudSql",
    "settings.backupConfiguration.pointInTimeRecoveryEnabled",
    false,
    /pointInTime/,
  ],
  [
    "postgres-backed-up",
    "cloudSql",
    "settings.backupConfiguration.backupRetentionSettings.retainedBackups",
    2,
    /retainedBackups/,
  ],
  ["postgres-deletion-protected", "rds", "deletionProtection", false, /deletionProtection: true/],
  ["postgres-deletion-protected", "rds", "skipFinalSnapshot", true, /skipFinalSnapshot/],
  ["postgres-deletion-protected", "rds", "options.protect", false, /protect: true/],
  ["postgres-deletion-protected", "azurePg", "options.protect", false, /protect: true/],
  ["postgres-deletion-protected", "cloudSql", "deletionProtection", false, /deletionProtection: false/],
  [
    "postgres-deletion-protected",
    "cloudSql",
    "settings.deletionProtectionEnabled",
    undefined,
    /deletionProtectionEnabled/,
  ],
  ["postgres-deletion-protected", "cloudSql", "options.protect", false, /protect: true/],
  ["redis-high-availability", "elasticache", "numCacheClusters", 1, /numCacheClusters >= 2/],
  ["redis-high-availability", "elasticache", "automaticFailoverEnabled", false, /automaticFailover/],
  ["redis-high-availability", "elasticache", "multiAzEnabled", undefined, /multiAzEnabled/],
  ["redis-high-availability", "azureRedis", "sku.name", "Basic", /Basic has no replica/],
  ["redis-high-availability", "azureRedis", "zones", ["1"], /zone-redundant/],
  ["redis-high-availability", "managedRedis", "highAvailability", "Disabled", /highAvailability/],
  ["redis-high-availability", "memorystore", "tier", "BASIC", /STANDARD_HA/],
  ["redis-tls", "elasticache", "transitEncryptionEnabled", false, /transitEncryptionEnabled/],
  ["redis-tls", "elasticache", "transitEncryptionMode", "preferred", /required/],
  ["redis-tls", "elasticache", "atRestEncryptionEnabled", undefined, /atRestEncryptionEnabled/],
  ["redis-tls", "azureRedis", "enableNonSslPort", true, /non-TLS port/],
  ["redis-tls", "azureRedis", "minimumTlsVersion", "1.0", /1\.2/],
  ["redis-tls", "managedRedisDb", "clientProtocol", "Plaintext", /Encrypted/],
  ["redis-tls", "memorystore", "transitEncryptionMode", "DISABLED", /SERVER_AUTHENTICATION/],
  ["redis-auth", "elasticache", "authToken", undefined, /authToken/],
  ["redis-auth", "azureRedis", "redisConfiguration", { authnotrequired: "true" }, /authnotrequired/],
  ["redis-auth", "memorystore", "authEnabled", false, /authEnabled/],
  ["filesystem-encrypted", "efs", "encrypted", undefined, /encrypted: true/],
  ["filesystem-zone-redundant", "efs", "availabilityZoneName", "eu-west-1a", /One Zone/],
  ["filesystem-zone-redundant", "azureFiles", "sku.name", "Premium_LRS", /Premium_ZRS/],
  ["filesystem-zone-redundant", "filestore", "tier", "ZONAL", /REGIONAL or ENTERPRISE/],
  ["filesystem-zone-redundant", "filestore", "tier", "BASIC_HDD", /REGIONAL or ENTERPRISE/],
  ["filesystem-zone-redundant", "azureFilesClass", "parameters.skuName", "Premium_LRS", /ZRS/],
  ["filesystem-zone-redundant", "filestoreClass", "parameters.tier", "zonal", /regional or enterprise/],
  ["filesystem-zone-redundant", "filestoreClass", "parameters", { network: "n" }, /regional or enterprise/],
  [
    "deployment-non-root",
    "deployment",
    "spec.template.spec.containers.0.securityContext.runAsNonRoot",
    false,
    /proxy\/proxy: set securityContext.runAsNonRoot/,
  ],
  [
    "deployment-non-root",
    "deployment",
    "spec.template.spec.containers.0.securityContext.runAsUser",
    0,
    /must not be 0/,
  ],
  [
    "deployment-non-root",
    "deployment",
    "spec.template.spec.containers.0.securityContext.privileged",
    true,
    /privileged/,
  ],
  [
    "deployment-non-root",
    "deployment",
    "spec.template.spec.containers.0.securityContext.allowPrivilegeEscalation",
    undefined,
    /allowPrivilegeEscalation: false/,
  ],
  [
    "deployment-resources",
    "deployment",
    "spec.template.spec.containers.0.resources",
    undefined,
    /requests.cpu/,
  ],
  [
    "deployment-resources",
    "deployment",
    "spec.template.spec.containers.0.resources.requests.memory",
    undefined,
    /requests.memory/,
  ],
  [
    "deployment-resources",
    "deployment",
    "spec.template.spec.containers.0.resources.limits",
    {},
    /limits.memory/,
  ],
  [
    "deployment-probes",
    "deployment",
    "spec.template.spec.containers.0.readinessProbe",
    undefined,
    /readinessProbe/,
  ],
  [
    "deployment-probes",
    "deployment",
    "spec.template.spec.containers.0.livenessProbe",
    undefined,
    /livenessProbe/,
  ],
  ["shared-volumes-rwx", "pvc", "spec.accessModes", ["ReadWriteOnce"], /ReadWriteMany/],
  ["shared-volumes-rwx", "pv", "spec.accessModes", ["ReadWriteOnce"], /ReadWriteMany/],
];

describe("each rule fires on a deliberately broken input", () => {
  it.each(breakages)("%s: %s.%s = %j", async (ruleName, fixture, path, value, expected) => {
    const rule = byName.get(ruleName)!;
    expect(rule, `rule ${ruleName}`).toBeDefined();
    const broken = patched(good[fixture], path, value);
    const messages = await runResourcePolicy(rule, broken);
    expect(messages).toEqual(expect.arrayContaining([expect.stringMatching(expected)]));
    // The same resource unbroken passes this rule: the breakage, not the fixture, fired it.
    expect(await runResourcePolicy(rule, good[fixture])).toEqual([]);
    // Only the broken rule reports (the other rules are indifferent to this property).
    const all = await evaluatePolicies([broken]);
    expect(new Set(all.map((v) => v.policy))).toEqual(new Set([ruleName]));
  });

  it("covers every resource rule", () => {
    expect(new Set(breakages.map(([rule]) => rule))).toEqual(new Set(resourcePolicies.map((p) => p.name)));
  });

  it("fires for an init container too", async () => {
    const dep = patched(good.deployment, "spec.template.spec.initContainers", [
      { name: "migrate", image: "x", securityContext: { runAsUser: 0 } },
    ]);
    const messages = await runResourcePolicy(byName.get("deployment-non-root")!, dep);
    expect(messages).toEqual(
      expect.arrayContaining([expect.stringMatching(/proxy\/migrate: runAsUser must not be 0/)]),
    );
  });

  it("checks a StatefulSet's pods (Chroma) like a Deployment's", async () => {
    const sts = {
      ...structuredClone(good.deployment),
      type: "kubernetes:apps/v1:StatefulSet",
      name: "chroma",
      inputs: { ...structuredClone(good.deployment.inputs), kind: "StatefulSet" },
    };
    for (const rule of ["deployment-non-root", "deployment-resources", "deployment-probes"])
      expect(await runResourcePolicy(byName.get(rule)!, sts), rule).toEqual([]);
    const root = patched(sts, "spec.template.spec.containers.0.securityContext.runAsUser", 0);
    expect(await runResourcePolicy(byName.get("deployment-non-root")!, root)).toEqual(
      expect.arrayContaining([expect.stringMatching(/chroma\/proxy: runAsUser must not be 0/)]),
    );
    const unprobed = patched(sts, "spec.template.spec.containers.0.livenessProbe", undefined);
    expect(await runResourcePolicy(byName.get("deployment-probes")!, unprobed)).toEqual([
      expect.stringMatching(/chroma\/proxy: set a livenessProbe/),
    ]);
    const unbounded = patched(sts, "spec.template.spec.containers.0.resources", {});
    expect(await runResourcePolicy(byName.get("deployment-resources")!, unbounded)).not.toEqual([]);
  });

  it("lets containers inherit runAsNonRoot from the pod, and fires when neither sets it", async () => {
    const rule = byName.get("deployment-non-root")!;
    const inherited = patched(good.deployment, "spec.template.spec.containers.0.securityContext", {
      allowPrivilegeEscalation: false,
    });
    expect(await runResourcePolicy(rule, inherited)).toEqual([]);
    const neither = patched(inherited, "spec.template.spec.securityContext", {});
    expect(await runResourcePolicy(rule, neither)).toEqual([
      expect.stringMatching(/proxy\/proxy: set securityContext.runAsNonRoot/),
    ]);
  });

  it("honours the backup retention the pack is configured with", async () => {
    const rule = byName.get("postgres-backed-up")!;
    expect(DEFAULT_MIN_BACKUP_RETENTION_DAYS).toBe(7);
    expect(await runResourcePolicy(rule, good.azurePg, { minRetentionDays: 30 })).toEqual([
      expect.stringMatching(/keeps 14 day\(s\).*>= 30/),
    ]);
    expect(await runResourcePolicy(rule, good.azurePg, { minRetentionDays: 14 })).toEqual([]);
  });

  it("reads secret inputs as plain values", async () => {
    expect((unwrapSecrets(good.elasticache.inputs) as { authToken: string }).authToken).toBe(
      "a-long-generated-token",
    );
    const emptyToken = patched(good.elasticache, "authToken", {
      "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
      value: "",
    });
    expect(await runResourcePolicy(byName.get("redis-auth")!, emptyToken)).toEqual([
      expect.stringMatching(/authToken/),
    ]);
  });

  it("ignores resources of other types and non-FileStorage accounts", async () => {
    const blob = patched(good.azureFiles, "kind", "StorageV2");
    const lrsBlob = patched(blob, "sku.name", "Standard_LRS");
    expect(
      await evaluatePolicies([lrsBlob, { type: "aws:s3/bucket:Bucket", name: "b", inputs: {} }]),
    ).toEqual([]);
  });
});

describe("pdb-for-multi-replica (stack rule)", () => {
  const stack = [good.deployment, good.hpa, good.pdb] as RecordedResource[];
  const run = (resources: RecordedResource[]) => runStackPolicy(podDisruptionBudgets, resources);

  it("passes a Deployment with an HPA (min 3) and a PDB minAvailable 2", async () => {
    expect(await run(stack)).toEqual([]);
  });

  it("fires when a multi-replica Deployment has no PDB", async () => {
    const violations = await run([good.deployment, good.hpa]);
    expect(violations).toEqual([
      {
        policy: "pdb-for-multi-replica",
        resource: "kubernetes:apps/v1:Deployment::proxy",
        message: expect.stringMatching(
          /llm-proxy\/llm-proxy runs up to 12 replicas but no PodDisruptionBudget/,
        ),
      },
    ]);
  });

  it("fires when minAvailable equals the HPA minimum (a drain would block)", async () => {
    const violations = await run([good.deployment, good.hpa, patched(good.pdb, "spec.minAvailable", 3)]);
    expect(violations).toEqual([
      expect.objectContaining({
        resource: "kubernetes:policy/v1:PodDisruptionBudget::proxy",
        message: expect.stringMatching(/allows 0 eviction\(s\).*minimum of 3/),
      }),
    ]);
  });

  it("fires for percentages that round up to every pod, and for maxUnavailable 0", async () => {
    expect(
      await run([good.deployment, good.hpa, patched(good.pdb, "spec.minAvailable", "90%")]),
    ).toHaveLength(1);
    const maxZero = patched(patched(good.pdb, "spec.minAvailable", undefined), "spec.maxUnavailable", 0);
    expect(await run([good.deployment, good.hpa, maxZero])).toHaveLength(1);
    const maxOne = patched(patched(good.pdb, "spec.minAvailable", undefined), "spec.maxUnavailable", "25%");
    expect(await run([good.deployment, good.hpa, maxOne])).toEqual([]);
  });

  it("fires when the PDB selects other pods or sits in another namespace", async () => {
    const otherPods = patched(good.pdb, "spec.selector.matchLabels", { "app.kubernetes.io/name": "chroma" });
    expect(await run([good.deployment, good.hpa, otherPods])).toEqual([
      expect.objectContaining({ message: expect.stringMatching(/no PodDisruptionBudget/) }),
    ]);
    const otherNs = patched(good.pdb, "metadata.namespace", "default");
    expect(await run([good.deployment, good.hpa, otherNs])).toHaveLength(1);
  });

  it("uses spec.replicas when there is no HPA, and skips single-replica Deployments", async () => {
    const fixed = patched(good.deployment, "spec.replicas", 2);
    expect(await run([fixed])).toHaveLength(1);
    expect(await run([fixed, good.pdb])).toHaveLength(1); // minAvailable 2 of 2: nothing can be evicted
    expect(await run([fixed, patched(good.pdb, "spec.minAvailable", 1)])).toEqual([]);
    expect(await run([patched(good.deployment, "spec.replicas", 1)])).toEqual([]);
  });

  it("matches a Deployment named only in its outputs (auto-named by the provider)", async () => {
    const autoNamed: RecordedResource = {
      ...patched(good.deployment, "metadata.name", undefined),
      outputs: { metadata: { name: "llm-proxy" } },
    };
    expect(await run([autoNamed, good.hpa])).toEqual([
      expect.objectContaining({ message: expect.stringMatching(/up to 12 replicas/) }),
    ]);
    expect(await run([autoNamed, good.hpa, good.pdb])).toEqual([]);
  });

  it("selectorMatches handles matchLabels and matchExpressions", () => {
    expect(selectorMatches({ matchLabels: labels }, labels)).toBe(true);
    expect(selectorMatches({}, labels)).toBe(false);
    expect(selectorMatches({ matchLabels: { a: "b" } }, labels)).toBe(false);
    const key = "app.kubernetes.io/component";
    expect(selectorMatches({ matchExpressions: [{ key, operator: "In", values: ["proxy"] }] }, labels)).toBe(
      true,
    );
    expect(
      selectorMatches({ matchExpressions: [{ key, operator: "NotIn", values: ["proxy"] }] }, labels),
    ).toBe(false);
    expect(selectorMatches({ matchExpressions: [{ key: "x", operator: "DoesNotExist" }] }, labels)).toBe(
      true,
    );
    expect(selectorMatches({ matchExpressions: [{ key, operator: "Exists" }] }, labels)).toBe(true);
  });

  it("allowedDisruptions follows Kubernetes rounding", () => {
    expect(allowedDisruptions({ spec: { minAvailable: "50%" } }, 3)).toBe(1); // ceil(1.5) = 2 must stay
    expect(allowedDisruptions({ spec: { maxUnavailable: "10%" } }, 3)).toBe(1); // ceil(0.3) = 1
    expect(allowedDisruptions({ spec: { minAvailable: 1 } }, 1)).toBe(0);
    expect(allowedDisruptions({ spec: {} }, 3)).toBe(0);
  });

  it("is the only stack rule", () => {
    expect(stackPolicies.map((p) => p.name)).toEqual(["pdb-for-multi-replica"]);
  });
});
