/**
 * Stack config without mocks: the pure parser/validator, Pulumi.yaml ↔ code defaults, the stack files, the
 * overrides doc, the offline runner's `pulumi config set --path` emulation, and the pure decisions.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { parseConfigPath, setConfigValue } from "../../scripts/offline-run";
import {
  hpaSpec,
  pdbSpecFields,
  proxyConfigYaml,
  proxyPlainEnv,
  proxySettingsProblems,
  terminationGraceSeconds,
} from "../../stacks/app/decisions";
import { awsSubnetPlan } from "../../stacks/aws/network";
import {
  awsNodeGroupScaling,
  clusterAutoscalerImageTag,
  clusterAutoscalerPolicy,
  clusterAutoscalerValues,
} from "../../stacks/aws/cluster";
import { efsPlacement } from "../../stacks/aws/filesystem";
import { awsRedisNodeCount } from "../../stacks/aws/redis";
import { clientIngress } from "../../stacks/aws/security";
import { azureNfsExport } from "../../stacks/azure/filesystem";
import { aksUserPools } from "../../stacks/azure/cluster";
import { azureSubnetPlan } from "../../stacks/azure/network";
import { roleDefinitionId } from "../../stacks/azure/roles";
import {
  AZURE_POSTGRES_STORAGE_GB,
  CONFIG_KEYS,
  azurePostgresTier,
  parseConfigValues,
  parseStackConfig,
  requiredMemoryMi,
  type RawConfig,
} from "../../stacks/config";
import { filestoreLocation } from "../../stacks/gcp/filesystem";
import { configProblems } from "./helpers";
import { gcpSubnetPlan } from "../../stacks/gcp/network";

const root = path.resolve(__dirname, "../..");
const projectFile = parseYaml(fs.readFileSync(path.join(root, "Pulumi.yaml"), "utf8"));

/** Who may reach the Kubernetes API: required whenever the program creates the cluster. */
const CIDRS: RawConfig = { apiAllowedCidrs: '["203.0.113.0/24"]' };
const AWS: RawConfig = { cloud: "aws", ...CIDRS };
const awsProvider = { region: "eu-west-1" };

const problems = (raw: RawConfig, provider: { region?: string; gcpProject?: string } = awsProvider) =>
  configProblems(raw, provider);

describe("Pulumi.yaml", () => {
  it("is the llm-proxy nodejs/TypeScript project with main stacks/", () => {
    expect(projectFile.name).toBe("llm-proxy");
    expect(projectFile.runtime).toEqual({
      name: "nodejs",
      options: { typescript: true, packagemanager: "npm" },
    });
    expect(projectFile.main).toBe("stacks/");
    expect(projectFile.description).toBeTruthy();
  });

  it("declares exactly the keys config.ts reads, with the same types, defaults and a description", () => {
    const declared = projectFile.config as Record<string, any>;
    expect(Object.keys(declared)).toEqual(Object.keys(CONFIG_KEYS));
    for (const [key, spec] of Object.entries(CONFIG_KEYS) as [string, any][]) {
      expect(declared[key].type, key).toBe(spec.type);
      expect(declared[key].default, key).toEqual(spec.default);
      expect(declared[key].description, key).toBe(spec.description);
      expect(declared[key].secret ?? false, key).toBe(spec.secret ?? false);
      // A secret never has a default; everything else but `cloud` has one.
      if (spec.secret) expect(declared[key].default, key).toBeUndefined();
      else if (key !== "cloud") expect(declared[key].default, key).toBeDefined();
    }
  });

  it("defaults give a valid production config once the cloud, region and API CIDRs are set", () => {
    expect(problems({ cloud: "aws" })).toEqual([
      expect.stringMatching(/^llm-proxy:apiAllowedCidrs is empty\. List the networks pulumi and kubectl/),
    ]);
    const cfg = parseStackConfig({ cloud: "aws", ...CIDRS }, awsProvider);
    expect(cfg.proxy.autoscaling).toMatchObject({ enabled: true, minReplicas: 3, maxReplicas: 12 });
    expect(cfg.proxy.pdb).toEqual({ minAvailable: 2 });
    expect(cfg.postgres).toMatchObject({ ha: true, size: "db.m6g.large", backupDays: 14 });
    expect(cfg.zones).toEqual(["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
  });
});

describe("stack files", () => {
  for (const stack of ["aws", "azure", "gcp"]) {
    it(`Pulumi.${stack}.yaml sets the cloud and its provider settings, declared keys only, no secrets`, () => {
      const text = fs.readFileSync(path.join(root, `Pulumi.${stack}.yaml`), "utf8");
      const config = parseYaml(text).config as Record<string, unknown>;
      expect(config["llm-proxy:cloud"]).toBe(stack);
      const providerKeys = {
        aws: ["aws:region"],
        azure: ["azure-native:location"],
        gcp: ["gcp:project", "gcp:region"],
      };
      for (const k of providerKeys[stack as keyof typeof providerKeys]) expect(config[k], k).toBeTruthy();
      for (const key of Object.keys(config)) {
        if (!key.startsWith("llm-proxy:")) continue;
        const bare = key.slice("llm-proxy:".length) as keyof typeof CONFIG_KEYS;
        expect(CONFIG_KEYS[bare], `${key} is declared`).toBeDefined();
        expect((CONFIG_KEYS[bare] as { secret?: boolean }).secret, `${key} is not a secret`).toBeUndefined();
      }
      expect(text).not.toMatch(/secure:|encryptedkey|sk-[A-Za-z0-9]/);
      // Production: HA everywhere, no dev escape hatch.
      expect(config["llm-proxy:allowNonHa"]).toBeUndefined();
      expect((config["llm-proxy:zones"] as string[]).length).toBeGreaterThanOrEqual(3);
    });
  }
});

describe("README deployment config reference", () => {
  it("lists every config key with its default", () => {
    const readme = fs.readFileSync(path.join(root, "README.md"), "utf8");
    const doc = readme.slice(readme.indexOf("## Deployment config reference"));
    for (const [key, spec] of Object.entries(CONFIG_KEYS) as [string, any][]) {
      const row = doc.split("\n").find((l) => l.startsWith(`| \`llm-proxy:${key}\` |`));
      expect(row, key).toBeDefined();
      if (spec.default !== undefined) expect(row, key).toContain(`\`${JSON.stringify(spec.default)}\``);
    }
  });
});

describe("config validation", () => {
  it("rejects an unknown cloud, naming the key and the choices", () => {
    const p = problems({ cloud: "oracle" });
    expect(p).toEqual(['llm-proxy:cloud is "oracle", an unknown cloud. Use one of aws, azure, gcp.']);
    expect(problems({})[0]).toMatch(
      /llm-proxy:cloud is not set\. Set it with: pulumi config set llm-proxy:cloud/,
    );
  });

  it("requires the cloud's provider settings", () => {
    expect(problems(AWS, {})).toEqual([
      "aws:region is not set. Set it with: pulumi config set aws:region <value>.",
    ]);
    expect(problems({ cloud: "gcp", ...CIDRS }, { region: "europe-west1" })).toEqual([
      "gcp:project is not set. Set it with: pulumi config set gcp:project <project-id>.",
    ]);
  });

  it("rejects min replicas above max", () => {
    expect(problems({ ...AWS, minReplicas: "6", maxReplicas: "4" })).toContainEqual(
      "llm-proxy:minReplicas (6) is greater than llm-proxy:maxReplicas (4). Lower minReplicas or raise maxReplicas.",
    );
  });

  it("rejects a PDB minAvailable that would block every node drain", () => {
    const p = problems({ ...AWS, minReplicas: "3", pdbMinAvailable: "3" });
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^llm-proxy:pdbMinAvailable \(3\) must be below llm-proxy:minReplicas \(3\)/);
    expect(p[0]).toContain("Set it to 2");
    // With autoscaling off the fixed replica count is the floor.
    expect(problems({ ...AWS, autoscalingEnabled: "false", replicas: "2", pdbMinAvailable: "2" })[0]).toMatch(
      /pdbMinAvailable \(2\) must be below llm-proxy:replicas \(2\)/,
    );
  });

  it("rejects a memory request below what the workers need", () => {
    expect(requiredMemoryMi(4)).toBe(660);
    const p = problems({ ...AWS, workers: "4", memoryRequestMi: "512", memoryLimitMi: "1024" });
    expect(p).toEqual([
      "llm-proxy:memoryRequestMi (512) is below what 4 worker(s) need (660 MiB = 60 + 150 x workers). Raise memoryRequestMi or lower workers.",
    ]);
  });

  it("rejects a CPU target outside 1-100", () => {
    for (const v of ["0", "101"]) {
      expect(problems({ ...AWS, cpuTargetPercent: v })).toEqual([
        `llm-proxy:cpuTargetPercent is ${v}, outside 1-100. Use a percentage such as 70.`,
      ]);
    }
  });

  it("rejects single-zone and non-HA settings unless allowNonHa is set", () => {
    const nonHa: RawConfig = {
      ...AWS,
      zones: '["eu-west-1a"]',
      postgresHa: "false",
      redisHa: "false",
      filesystemTier: "OneZone",
      minReplicas: "1",
      pdbMinAvailable: "0",
    };
    const p = problems(nonHa);
    expect(p).toHaveLength(5);
    for (const key of ["zones", "postgresHa", "redisHa", "filesystemTier", "minReplicas"]) {
      const line = p.find((x) => x.startsWith(`llm-proxy:${key}`));
      expect(line, key).toBeDefined();
      expect(line).toContain("llm-proxy:allowNonHa");
    }
    const dev = parseStackConfig({ ...nonHa, allowNonHa: "true" }, awsProvider);
    expect(dev.postgres.ha).toBe(false);
    expect(dev.zones).toEqual(["eu-west-1a"]);
    expect(
      problems({ cloud: "gcp", ...CIDRS, filesystemTier: "ZONAL" }, { region: "r", gcpProject: "p" })[0],
    ).toMatch(/llm-proxy:filesystemTier "ZONAL" is zonal .* Use REGIONAL or ENTERPRISE/);
  });

  it("rejects badly typed values with the way to set them", () => {
    expect(parseConfigValues({ replicas: "three" }).problems).toEqual([
      'llm-proxy:replicas must be an integer, got "three". Set it with: pulumi config set llm-proxy:replicas <value>.',
    ]);
    expect(parseConfigValues({ cacheEnabled: "yes" }).problems[0]).toMatch(/must be true or false/);
    expect(parseConfigValues({ zones: "eu-west-1a" }).problems[0]).toMatch(
      /llm-proxy:zones must be a list of strings\. Set items with: pulumi config set --path 'llm-proxy:zones\[0\]'/,
    );
  });

  it("rejects an existing network without subnets, and enum typos", () => {
    const p = problems({ ...AWS, existingNetworkId: "vpc-1", logLevel: "verbose", serviceType: "NodePort" });
    expect(p).toHaveLength(3);
    expect(p[0]).toMatch(/existingNetworkId is set but llm-proxy:existingSubnetIds is empty/);
    expect(p[1]).toMatch(/llm-proxy:logLevel is "verbose", which is not one of fatal, error/);
    expect(p[2]).toMatch(/llm-proxy:serviceType is "NodePort", which is not one of ClusterIP, LoadBalancer/);
  });

  it("reports every problem at once", () => {
    expect(problems({ ...AWS, minReplicas: "20", cpuTargetPercent: "150", workers: "8" })).toHaveLength(3);
  });
});

describe("cloud limits the validator enforces", () => {
  const AZURE: RawConfig = { cloud: "azure", ...CIDRS };
  const azure = { region: "westeurope" };
  const GCP: RawConfig = { cloud: "gcp", ...CIDRS };
  const gcp = { region: "europe-west1", gcpProject: "p" };

  it("Kubernetes API: required, never 0.0.0.0/0 on production stacks, IPv4 CIDRs only", () => {
    expect(problems({ cloud: "aws" })[0]).toContain(
      "pulumi config set --path 'llm-proxy:apiAllowedCidrs[0]' <your egress CIDR",
    );
    const open = problems({ cloud: "gcp", apiAllowedCidrs: '["10.0.0.0/8","0.0.0.0/0"]' }, gcp);
    expect(open).toEqual([
      expect.stringMatching(
        /^llm-proxy:apiAllowedCidrs lists 0\.0\.0\.0\/0, which opens the Kubernetes API to the whole internet\..*llm-proxy:allowNonHa/,
      ),
    ]);
    const dev = parseStackConfig(
      { ...AWS, apiAllowedCidrs: '["0.0.0.0/0"]', allowNonHa: "true" },
      awsProvider,
    );
    expect(dev.cluster.apiAllowedCidrs).toEqual(["0.0.0.0/0"]);
    expect(problems({ ...AWS, apiAllowedCidrs: '["office"]' })).toEqual([
      'llm-proxy:apiAllowedCidrs entry "office" is not an IPv4 CIDR (four octets 0-255, prefix 0-32). Use e.g. 203.0.113.0/24.',
    ]);
    // An existing cluster's API is not the program's to open or close.
    const existing = parseStackConfig(
      { cloud: "aws", existingNetworkId: "vpc-1", existingSubnetIds: '["s-1","s-2"]' },
      awsProvider,
      { existingKubeconfig: {} as never },
    );
    expect(existing.cluster.apiAllowedCidrs).toEqual([]);
  });

  it("Azure PostgreSQL: Premium SSD storage sizes only, a valid default, and the tier from the SKU name", () => {
    expect(parseStackConfig(AZURE, azure).postgres.storageGb).toBe(128);
    expect(AZURE_POSTGRES_STORAGE_GB).toContain(128);
    expect(parseStackConfig(AWS, awsProvider).postgres.storageGb).toBe(100);
    expect(parseStackConfig({ ...AZURE, postgresStorageGb: "512" }, azure).postgres.storageGb).toBe(512);
    expect(problems({ ...AZURE, postgresStorageGb: "100" }, azure)).toEqual([
      "llm-proxy:postgresStorageGb is 100, a size Azure Database for PostgreSQL does not offer. Use one of 32, 64, 128, 256, 512, 1024, 2048, 4095, 4096, 8192, 16384, 32767, e.g. pulumi config set llm-proxy:postgresStorageGb 128.",
    ]);
    expect(problems({ ...AWS, postgresStorageGb: "10" })[0]).toMatch(/below the 20 GB RDS gp3 minimum/);
    expect(azurePostgresTier("Standard_B2ms")).toBe("Burstable");
    expect(azurePostgresTier("Standard_D4ds_v5")).toBe("GeneralPurpose");
    expect(azurePostgresTier("Standard_E8ds_v5")).toBe("MemoryOptimized");
    expect(azurePostgresTier("db.r6g.large")).toBeUndefined();
    expect(problems({ ...AZURE, postgresSize: "Standard_B2ms" }, azure)).toEqual([
      expect.stringMatching(
        /^llm-proxy:postgresSize "Standard_B2ms" is Burstable, which has no zone-redundant HA/,
      ),
    ]);
    expect(problems({ ...AZURE, postgresSize: "GP_Gen5_2" }, azure)[0]).toMatch(
      /^llm-proxy:postgresSize "GP_Gen5_2" is not a Flexible Server SKU name/,
    );
    const dev = parseStackConfig(
      { ...AZURE, postgresSize: "Standard_B2ms", postgresHa: "false", allowNonHa: "true" },
      azure,
    );
    expect(dev.postgres.size).toBe("Standard_B2ms");
  });

  it("Azure NFS share quota within 100-102400 GB", () => {
    expect(problems({ ...AZURE, filesystemSizeGb: "50" }, azure)[0]).toMatch(
      /^llm-proxy:filesystemSizeGb is 50, outside the 100-102400 GB .* pulumi config set llm-proxy:filesystemSizeGb 100\.$/,
    );
    expect(azureNfsExport("acct1", "llmproxy")).toEqual({
      server: "acct1.file.core.windows.net",
      path: "/acct1/llmproxy",
    });
  });

  it("GCP Filestore: per-tier minimum capacity, and zonal tiers need a zone", () => {
    expect(
      problems({ ...GCP, filesystemTier: "BASIC_SSD", allowNonHa: "true", zones: '["europe-west1-b"]' }, gcp),
    ).toEqual([
      "llm-proxy:filesystemSizeGb is 1024, below the 2560 GB minimum of Filestore BASIC_SSD. Set it with: pulumi config set llm-proxy:filesystemSizeGb 2560.",
    ]);
    expect(problems({ ...GCP, filesystemSizeGb: "512" }, gcp)[0]).toMatch(
      /below the 1024 GB minimum of Filestore REGIONAL/,
    );
    expect(problems({ ...GCP, filesystemTier: "ZONAL", allowNonHa: "true" }, gcp)).toEqual([
      expect.stringMatching(
        /^llm-proxy:filesystemTier "ZONAL" is zonal and is placed in the first of llm-proxy:zones, which is empty/,
      ),
    ]);
    expect(filestoreLocation("REGIONAL", "europe-west1", ["europe-west1-b"])).toBe("europe-west1");
    expect(filestoreLocation("ENTERPRISE", "europe-west1", [])).toBe("europe-west1");
    expect(filestoreLocation("BASIC_HDD", "europe-west1", ["europe-west1-c", "europe-west1-d"])).toBe(
      "europe-west1-c",
    );
    expect(() => filestoreLocation("ZONAL", "europe-west1", [])).toThrow(/zonal: set zones/);
  });

  it("AWS One Zone EFS: the first zone and only its subnet", () => {
    expect(efsPlacement("Regional", ["s1", "s2"], ["a", "b"])).toEqual({ mountSubnets: ["s1", "s2"] });
    expect(efsPlacement("OneZone", ["s1", "s2"], ["a", "b"])).toEqual({
      availabilityZoneName: "a",
      mountSubnets: ["s1"],
    });
    const dev = parseStackConfig({ ...AWS, filesystemTier: "OneZone", allowNonHa: "true" }, awsProvider);
    expect(dev.filesystem.tier).toBe("OneZone");
    expect(dev.zones[0]).toBe("eu-west-1a");
  });

  it("AWS existing subnets: each once, at least two, zones naming their AZs or empty", () => {
    const existing: RawConfig = { ...AWS, existingNetworkId: "vpc-1" };
    expect(problems({ ...existing, existingSubnetIds: '["s-1","s-1"]' })).toEqual([
      "llm-proxy:existingSubnetIds lists s-1 more than once. List each subnet once.",
    ]);
    expect(problems({ ...existing, existingSubnetIds: '["s-1"]' })[0]).toMatch(
      /^llm-proxy:existingSubnetIds lists 1 subnet: .* at least 2 AZs/,
    );
    expect(problems({ ...existing, existingSubnetIds: '["s-1","s-2"]', zones: '["a","b","c"]' })[0]).toMatch(
      /^llm-proxy:zones lists 3 zone\(s\) but llm-proxy:existingSubnetIds 2 subnet\(s\)/,
    );
    // Unknown AZs are not guessed: nothing is pinned (not the region's a, b, c).
    expect(parseStackConfig({ ...existing, existingSubnetIds: '["s-1","s-2"]' }, awsProvider).zones).toEqual(
      [],
    );
    expect(
      problems({
        ...existing,
        existingSubnetIds: '["s-1","s-2"]',
        filesystemTier: "OneZone",
        allowNonHa: "true",
      })[0],
    ).toMatch(
      /filesystemTier "OneZone" is zonal and is placed in the first of llm-proxy:zones, which is empty.*AZ of the first of existingSubnetIds/,
    );
  });

  it("AKS user pools, one per zone: nodeMinCount split like the AWS node groups, nodeMaxCount each", () => {
    expect(aksUserPools(4, 9, ["1", "2", "3"])).toEqual([
      { name: "user1", zone: "1", count: 2, minCount: 2, maxCount: 9 },
      { name: "user2", zone: "2", count: 1, minCount: 1, maxCount: 9 },
      { name: "user3", zone: "3", count: 1, minCount: 1, maxCount: 9 },
    ]);
    for (const [min, max] of [
      [3, 12],
      [2, 4],
      [7, 20],
    ]) {
      expect(aksUserPools(min, max, ["1", "2", "3"]).map((p) => [p.minCount, p.maxCount])).toEqual(
        awsNodeGroupScaling(min, max, 3).map((g) => [g.minSize, g.maxSize]),
      );
    }
  });

  it("Cluster Autoscaler: image minor follows the cluster, writes limited to this cluster's groups", () => {
    expect(clusterAutoscalerImageTag("1.33")).toBe("v1.33.0");
    expect(() => clusterAutoscalerImageTag("latest")).toThrow(/not a Kubernetes version/);
    const policy = JSON.parse(clusterAutoscalerPolicy("prod"));
    const write = policy.Statement.find((st: any) => st.Action.includes("autoscaling:SetDesiredCapacity"));
    expect(write.Condition.StringEquals).toEqual({
      "aws:ResourceTag/k8s.io/cluster-autoscaler/prod": "owned",
    });
    const read = policy.Statement.find((st: any) => st !== write);
    expect(read.Action.some((a: string) => a.startsWith("autoscaling:Set"))).toBe(false);
  });

  it("AWS node groups, one per AZ: nodeMinCount split evenly (at least 1 each when it allows), nodeMaxCount the ceiling", () => {
    expect(awsNodeGroupScaling(3, 12, 3)).toEqual([
      { minSize: 1, desiredSize: 1, maxSize: 12 },
      { minSize: 1, desiredSize: 1, maxSize: 12 },
      { minSize: 1, desiredSize: 1, maxSize: 12 },
    ]);
    expect(awsNodeGroupScaling(4, 9, 3).map((g) => g.minSize)).toEqual([2, 1, 1]);
    // Fewer nodes than zones (a dev stack): some groups start empty; the autoscaler still scales them from zero.
    expect(awsNodeGroupScaling(2, 4, 3).map((g) => g.minSize)).toEqual([1, 1, 0]);
    for (const groups of [1, 2, 3, 4, 6]) {
      for (let min = 1; min <= 13; min++) {
        for (const max of [min, min + 1, 2 * min + 5]) {
          const split = awsNodeGroupScaling(min, max, groups);
          const mins = split.map((g) => g.minSize);
          const label = `${min}..${max} over ${groups}`;
          expect(split, label).toHaveLength(groups);
          expect(
            mins.reduce((a, b) => a + b, 0),
            label,
          ).toBe(min);
          expect(Math.max(...mins) - Math.min(...mins), label).toBeLessThanOrEqual(1);
          if (min >= groups) expect(Math.min(...mins), label).toBeGreaterThanOrEqual(1);
          for (const g of split) {
            expect(g.desiredSize, label).toBe(g.minSize);
            expect(g.maxSize, label).toBe(max);
          }
        }
      }
    }
    // The groups' maximums overlap, so the autoscaler holds the cluster to nodeMaxCount in all.
    expect(clusterAutoscalerValues("prod", "eu-west-1", "1.33", 12).extraArgs).toMatchObject({
      "balance-similar-node-groups": true,
      "max-nodes-total": 12,
    });
  });
});

describe("offline runner config set --path", () => {
  it("parses nested keys", () => {
    expect(parseConfigPath("llm-proxy:zones[1]", "llm-proxy")).toEqual({ key: "llm-proxy:zones", path: [1] });
    expect(parseConfigPath("replicas", "llm-proxy")).toEqual({ key: "llm-proxy:replicas", path: [] });
    expect(parseConfigPath("aws:tags.team", "llm-proxy")).toEqual({ key: "aws:tags", path: ["team"] });
  });

  it("sets nested values like the CLI, typing booleans and integers", () => {
    const cfg: Record<string, string> = { "llm-proxy:zones": '["a","b"]' };
    setConfigValue(cfg, "llm-proxy", "llm-proxy:zones[2]", "c");
    expect(JSON.parse(cfg["llm-proxy:zones"])).toEqual(["a", "b", "c"]);
    setConfigValue(cfg, "llm-proxy", "x:obj.n", "5");
    setConfigValue(cfg, "llm-proxy", "x:obj.flag", "true");
    expect(JSON.parse(cfg["x:obj"])).toEqual({ n: 5, flag: true });
    setConfigValue(cfg, "llm-proxy", "replicas", 4);
    expect(cfg["llm-proxy:replicas"]).toBe("4");
  });
});

describe("pure decisions", () => {
  it("plans subnets inside the network, one per zone, without overlap", () => {
    expect(awsSubnetPlan("10.40.0.0/16", 3)).toEqual({
      private: ["10.40.0.0/19", "10.40.32.0/19", "10.40.64.0/19"],
      public: ["10.40.240.0/24", "10.40.241.0/24", "10.40.242.0/24"],
    });
    expect(() => awsSubnetPlan("10.40.0.0/16", 7)).toThrow(/Between 1 and 6 zones/);
    expect(azureSubnetPlan("10.41.0.0/16")).toEqual({
      cluster: "10.41.0.0/20",
      postgres: "10.41.16.0/24",
      endpoints: "10.41.17.0/24",
    });
    expect(gcpSubnetPlan("10.42.0.0/16")).toEqual({
      nodes: "10.42.0.0/20",
      services: "10.42.16.0/20",
      pods: "10.42.128.0/17",
    });
  });

  it("sizes Redis with one node per zone under HA and admits only the cluster", () => {
    expect(awsRedisNodeCount(true, 3)).toBe(3);
    expect(awsRedisNodeCount(true, 1)).toBe(2);
    expect(awsRedisNodeCount(false, 3)).toBe(1);
    expect(clientIngress(5432, { cidrs: ["10.40.0.0/16"] }, "pg")).toEqual([
      { protocol: "tcp", fromPort: 5432, toPort: 5432, cidrBlocks: ["10.40.0.0/16"], description: "pg" },
    ]);
  });

  it("builds Azure role definition ids in the resource's subscription", () => {
    expect(roleDefinitionId("/subscriptions/abc/resourceGroups/rg/providers/x/y/z", "guid")).toBe(
      "/subscriptions/abc/providers/Microsoft.Authorization/roleDefinitions/guid",
    );
    expect(() => roleDefinitionId("rg/z", "g")).toThrow(/not an Azure resource id/);
  });

  it("derives HPA, PDB, grace period and env from the settings", () => {
    const s = parseStackConfig(
      { ...AWS, requestTimeoutSeconds: "600", preStopDelaySeconds: "5" },
      awsProvider,
    ).proxy;
    expect(terminationGraceSeconds(s)).toBe(620);
    expect(hpaSpec(s.autoscaling).behavior.scaleDown.stabilizationWindowSeconds).toBe(300);
    expect(pdbSpecFields({ maxUnavailable: 1 })).toEqual({ maxUnavailable: 1 });
    const env = proxyPlainEnv(s, undefined);
    // REPLICAS is the HPA maximum (12 by default), so the Redis-down fallback never over-admits.
    expect(env).toMatchObject({ PORT: "8000", SHUTDOWN_GRACE_SECONDS: "600", REPLICAS: "12", WORKERS: "2" });
    // 0 (the default) leaves the variable out, so a retention set through proxyConfig's usage.retention_days holds.
    expect(env.USAGE_RETENTION_DAYS).toBeUndefined();
    const kept = parseStackConfig({ ...AWS, usageRetentionDays: "90" }, awsProvider).proxy;
    expect(proxyPlainEnv(kept, undefined).USAGE_RETENTION_DAYS).toBe("90");
    // X-Forwarded-For is believed one hop deep only behind the Ingress (whose controller appends to it).
    expect(env.TRUSTED_PROXY_HOPS).toBeUndefined();
    const behind = parseStackConfig({ ...AWS, ingressHost: "llm.example.com" }, awsProvider).proxy;
    expect(proxyPlainEnv(behind, undefined).TRUSTED_PROXY_HOPS).toBe("1");
    // Two proxies (GKE's GCE ingress appends the client and its load balancer).
    const gce = parseStackConfig(
      { ...AWS, ingressHost: "llm.example.com", trustedProxyHops: "2" },
      awsProvider,
    ).proxy;
    expect(proxyPlainEnv(gce, undefined).TRUSTED_PROXY_HOPS).toBe("2");
  });

  it("usage retention: 0 keeps usage, a negative or absurd value is refused with the key", () => {
    expect(problems({ ...AWS, usageRetentionDays: "-1" })).toEqual([
      expect.stringMatching(
        /^llm-proxy:usageRetentionDays is -1, outside 0-36500, the range the proxy accepts/,
      ),
    ]);
    expect(problems({ ...AWS, usageRetentionDays: "50000" })).toEqual([
      expect.stringMatching(/^llm-proxy:usageRetentionDays is 50000, outside 0-36500/),
    ]);
  });

  it("the app component refuses unsafe settings on its own", () => {
    const s = parseStackConfig(AWS, awsProvider).proxy;
    expect(proxySettingsProblems(s)).toEqual([]);
    const bad = { ...s, pdb: { minAvailable: 3 }, memoryRequestMi: 100 };
    expect(proxySettingsProblems(bad)).toEqual([
      "PDB minAvailable 3 blocks every node drain with 3 replicas. Lower it.",
      "memory request 100Mi is below 360Mi for 2 workers. Raise it.",
    ]);
    const upside = {
      ...s,
      autoscaling: { ...s.autoscaling, minReplicas: 5, maxReplicas: 4 },
      pdb: { minAvailable: 1 },
    };
    expect(proxySettingsProblems(upside)).toEqual(["minReplicas 5 exceeds maxReplicas 4. Lower it."]);
  });

  it("generates the proxy config from the keys that are set and merges proxyConfig over it", () => {
    const s = parseStackConfig(
      { ...AWS, proxyConfig: "limits:\n  key: { requests_per_minute: 60 }\nmodels: []\n" },
      awsProvider,
    ).proxy;
    const cfg = parseYaml(proxyConfigYaml(s, ["OPENAI_API_KEY"]));
    expect(cfg.providers.openai).toEqual({
      type: "openai",
      base_url: "https://api.openai.com/v1",
      api_key_env: "OPENAI_API_KEY",
    });
    // models merge by name: an empty list adds nothing and removes nothing.
    expect(cfg.models.map((m: { name: string }) => m.name)).toEqual([
      "gpt-4o-mini",
      "gpt-4o",
      "text-embedding-3-small",
    ]);
    expect(cfg.limits).toEqual({ failure_mode: "fail-open", replicas: 12, key: { requests_per_minute: 60 } });
    expect(parseYaml(proxyConfigYaml(s, [])).providers).toEqual({});
    expect(problems({ ...AWS, proxyConfig: "- a list" })).toEqual([
      expect.stringMatching(/^llm-proxy:proxyConfig must be a YAML mapping/),
    ]);
  });
});
