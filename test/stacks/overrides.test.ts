/**
 * `pulumi config set` overrides reach the resources: replicas, autoscaling and PDB in the Deployment, HPA and
 * PDB; zones, existing network/cluster, provider keys, ingress and features. Each case is a fresh run of the
 * real program under mocks.
 */
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import * as fs from "node:fs";
import * as path from "node:path";
import { CONFIG_KEYS } from "../../stacks/config";
import { K8S, all, at, isSecretInput, one, run, validateKubernetesObjects } from "./helpers";

function containerEnv(dep: { inputs: Record<string, unknown> }): Record<string, any> {
  const c = at(dep.inputs, "spec.template.spec.containers")[0];
  return Object.fromEntries(c.env.map((e: any) => [e.name, e.value ?? e.valueFrom]));
}

describe("overrides", () => {
  it("replicas, autoscaling and PDB overrides reach the Deployment, HPA and PDB", async () => {
    const r = await run({
      stack: "aws",
      overrides: {
        "llm-proxy:minReplicas": "4",
        "llm-proxy:maxReplicas": "16",
        "llm-proxy:cpuTargetPercent": "60",
        "llm-proxy:scaleDownStabilizationSeconds": "600",
        "llm-proxy:pdbMinAvailable": "3",
        "llm-proxy:workers": "3",
        "llm-proxy:memoryRequestMi": "640",
        "llm-proxy:memoryLimitMi": "1024",
      },
    });
    const dep = one(r, K8S.deployment, "llm-proxy-deployment");
    expect(at(dep.inputs, "spec.replicas")).toBe(4);
    const hpa = one(r, K8S.hpa);
    expect(at(hpa.inputs, "spec.minReplicas")).toBe(4);
    expect(at(hpa.inputs, "spec.maxReplicas")).toBe(16);
    expect(at(hpa.inputs, "spec.metrics")[0].resource.target.averageUtilization).toBe(60);
    expect(at(hpa.inputs, "spec.behavior.scaleDown.stabilizationWindowSeconds")).toBe(600);
    const pdb = one(r, K8S.pdb);
    expect(at(pdb.inputs, "spec.minAvailable")).toBe(3);
    expect(at(pdb.inputs, "spec.maxUnavailable")).toBeUndefined();
    const env = containerEnv(dep);
    expect(env.WORKERS).toBe("3");
    // Budgets with Redis down are shared by the HPA maximum, never over-admitted.
    expect(env.REPLICAS).toBe("16");
    expect(at(dep.inputs, "spec.template.spec.containers")[0].resources).toEqual({
      requests: { cpu: "1000m", memory: "640Mi" },
      limits: { memory: "1024Mi" },
    });
    const cm = parseYaml(at(one(r, K8S.secret, "llm-proxy-config-file").inputs, "stringData")["config.yaml"]);
    expect(cm.limits.replicas).toBe(16);
  });

  it("autoscaling off: fixed replicas, no HPA, and a maxUnavailable PDB", async () => {
    const r = await run({
      stack: "gcp",
      overrides: { autoscalingEnabled: "false", replicas: "5", pdbMaxUnavailable: "1" },
    });
    const dep = one(r, K8S.deployment, "llm-proxy-deployment");
    expect(at(dep.inputs, "spec.replicas")).toBe(5);
    expect(dep.options.ignoreChanges).toEqual([]);
    expect(all(r, K8S.hpa)).toHaveLength(0);
    const pdb = one(r, K8S.pdb);
    expect(at(pdb.inputs, "spec")).toEqual({
      selector: at(dep.inputs, "spec.selector"),
      maxUnavailable: 1,
    });
    expect(containerEnv(dep).REPLICAS).toBe("5");
  });

  it("zones set with --path change the subnets, node placement and Redis nodes", async () => {
    const r = await run({
      stack: "aws",
      overrides: { "llm-proxy:zones": '["eu-west-1a","eu-west-1b"]', "llm-proxy:zones[1]": "eu-west-1c" },
    });
    const privateSubnets = all(r, "aws:ec2/subnet:Subnet").filter((s) => s.name.includes("private"));
    expect(privateSubnets.map((s) => s.inputs.availabilityZone)).toEqual(["eu-west-1a", "eu-west-1c"]);
    const rg = one(r, "aws:elasticache/replicationGroup:ReplicationGroup");
    expect(rg.inputs.numCacheClusters).toBe(2);
    expect(rg.inputs.preferredCacheClusterAzs).toEqual(["eu-west-1a", "eu-west-1c"]);
    expect(all(r, "aws:efs/mountTarget:MountTarget")).toHaveLength(2);
    // A node group per zone: nodeMinCount 3 split 2 + 1, each may grow to nodeMaxCount 12.
    const nodes = all(r, "aws:eks/nodeGroup:NodeGroup");
    expect(nodes.map((n) => n.inputs.subnetIds)).toEqual(privateSubnets.map((s) => [s.id]));
    expect(nodes.map((n) => n.inputs.scalingConfig)).toEqual([
      { minSize: 2, desiredSize: 2, maxSize: 12 },
      { minSize: 1, desiredSize: 1, maxSize: 12 },
    ]);
  });

  it("provider keys set as secrets reach the Secret, and the config file names them without values", async () => {
    const r = await run({
      stack: "azure",
      secrets: { "llm-proxy:openaiApiKey": "sk-offline-test-1234", anthropicApiKey: "sk-ant-offline-5678" },
    });
    expect(r.secretKeys).toEqual(
      expect.arrayContaining(["llm-proxy:openaiApiKey", "llm-proxy:anthropicApiKey"]),
    );
    const secret = one(r, K8S.secret, "llm-proxy-secret");
    const data = secret.inputs.stringData as Record<string, string>;
    expect(data.OPENAI_API_KEY).toBe("sk-offline-test-1234");
    expect(data.ANTHROPIC_API_KEY).toBe("sk-ant-offline-5678");
    expect(isSecretInput(secret, "stringData.OPENAI_API_KEY")).toBe(true);
    const cmText = at(one(r, K8S.secret, "llm-proxy-config-file").inputs, "stringData")[
      "config.yaml"
    ] as string;
    expect(cmText).not.toContain("sk-offline");
    const cm = parseYaml(cmText);
    expect(cm.providers.openai.api_key_env).toBe("OPENAI_API_KEY");
    expect(cm.providers.anthropic.api_key_env).toBe("ANTHROPIC_API_KEY");
    expect(cm.embedding_model).toBe("text-embedding-3-small");
    // New secret values roll the pods.
    const before = at(
      one(r, K8S.deployment, "llm-proxy-deployment").inputs,
      "spec.template.metadata.annotations",
    );
    const r2 = await run({
      stack: "azure",
      secrets: { "llm-proxy:openaiApiKey": "sk-offline-test-rotated" },
    });
    const after = at(
      one(r2, K8S.deployment, "llm-proxy-deployment").inputs,
      "spec.template.metadata.annotations",
    );
    expect(after["llm-proxy/checksum"]).not.toBe(before["llm-proxy/checksum"]);
  });

  it("an existing VPC and cluster: nothing network or cluster is created, data services admit the VPC range", async () => {
    const kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n";
    const r = await run({
      stack: "aws",
      overrides: {
        existingNetworkId: "vpc-0abc",
        existingSubnetIds: '["subnet-a","subnet-b","subnet-c"]',
        // The stack file names eu-west-1a..c; an existing VPC's subnets may be elsewhere, so leave zones empty.
        zones: "[]",
      },
      secrets: { existingKubeconfig: kubeconfig },
    });
    expect(all(r, "aws:ec2/vpc:Vpc")).toHaveLength(0);
    expect(all(r, "aws:eks/cluster:Cluster")).toHaveLength(0);
    expect(all(r, "aws:ec2/natGateway:NatGateway")).toHaveLength(0);
    const provider = one(r, K8S.provider);
    expect(provider.inputs.kubeconfig).toBe(kubeconfig);
    expect(isSecretInput(provider, "kubeconfig")).toBe(true);
    expect(one(r, "aws:rds/subnetGroup:SubnetGroup").inputs.subnetIds).toEqual([
      "subnet-a",
      "subnet-b",
      "subnet-c",
    ]);
    const sg = one(r, "aws:ec2/securityGroup:SecurityGroup", "llm-proxy-pg-sg");
    expect(sg.inputs.vpcId).toBe("vpc-0abc");
    expect(at(sg.inputs, "ingress")[0].cidrBlocks).toEqual(["10.40.0.0/16"]);
    expect(all(r, "aws:efs/mountTarget:MountTarget").map((m) => m.inputs.subnetId)).toEqual([
      "subnet-a",
      "subnet-b",
      "subnet-c",
    ]);
    expect(r.outputs.networkId).toBe("vpc-0abc");
    // The subnets' AZs are unknown offline and need not be the stack file's zones: Redis gets one node per subnet
    // and ElastiCache places them among the subnet group's AZs.
    const rg = one(r, "aws:elasticache/replicationGroup:ReplicationGroup");
    expect(rg.inputs.numCacheClusters).toBe(3);
    expect(rg.inputs.preferredCacheClusterAzs).toBeUndefined();
  });

  it("an existing VPC with zones named: Redis nodes are pinned to those AZs", async () => {
    const r = await run({
      stack: "aws",
      overrides: {
        existingNetworkId: "vpc-0abc",
        existingSubnetIds: '["subnet-a","subnet-b"]',
        zones: '["eu-west-1b","eu-west-1c"]',
      },
    });
    const rg = one(r, "aws:elasticache/replicationGroup:ReplicationGroup");
    expect(rg.inputs.numCacheClusters).toBe(2);
    expect(rg.inputs.preferredCacheClusterAzs).toEqual(["eu-west-1b", "eu-west-1c"]);
    // The created cluster gets a node group in each existing subnet.
    expect(all(r, "aws:eks/nodeGroup:NodeGroup").map((n) => n.inputs.subnetIds)).toEqual([
      ["subnet-a"],
      ["subnet-b"],
    ]);
    const failed = run({
      stack: "aws",
      overrides: {
        existingNetworkId: "vpc-0abc",
        existingSubnetIds: '["subnet-a","subnet-a","subnet-b"]',
      },
    });
    await expect(failed).rejects.toThrow(/llm-proxy:existingSubnetIds lists subnet-a more than once/);
  });

  it("Azure existing subnets: the storage account admits only the cluster subnet, whose Microsoft.Storage endpoint the program cannot add, so the docs ask for it", async () => {
    const ids = ["cluster", "postgres", "endpoints"].map(
      (s) =>
        `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/${s}`,
    );
    const r = await run({
      stack: "azure",
      overrides: {
        existingNetworkId:
          "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet",
        existingSubnetIds: JSON.stringify(ids),
      },
    });
    expect(all(r, "azure-native:network:Subnet")).toEqual([]);
    const account = one(r, "azure-native:storage:StorageAccount");
    expect(at(account.inputs, "networkRuleSet")).toMatchObject({
      defaultAction: "Deny",
      virtualNetworkRules: [{ virtualNetworkResourceId: ids[0] }],
    });
    // Azure refuses a virtual network rule for a subnet without the endpoint: the key's description (Pulumi.yaml
    // declares the same text) and the README's row and Azure notes say so.
    const needsEndpoint = /cluster subnet must have a `?Microsoft\.Storage`? service endpoint/;
    expect(CONFIG_KEYS.existingSubnetIds.description).toMatch(needsEndpoint);
    const readme = fs.readFileSync(path.resolve(__dirname, "../../README.md"), "utf8");
    const row = readme.split("\n").find((l) => l.startsWith("| `llm-proxy:existingSubnetIds` |"));
    expect(row).toMatch(needsEndpoint);
    const azureNotes = readme.slice(readme.indexOf("- **Azure**:"), readme.indexOf("- **GCP**:"));
    expect(azureNotes).toMatch(/existingSubnetIds[\s\S]*`Microsoft\.Storage` service endpoint/);
  });

  it("AWS filesystemTier OneZone: a One Zone EFS in the first zone with its single mount target there", async () => {
    const r = await run({ stack: "aws", overrides: { filesystemTier: "OneZone", allowNonHa: "true" } });
    const efs = one(r, "aws:efs/fileSystem:FileSystem");
    expect(efs.inputs.availabilityZoneName).toBe("eu-west-1a");
    const firstSubnet = all(r, "aws:ec2/subnet:Subnet").find(
      (s) => s.name.includes("private") && s.inputs.availabilityZone === "eu-west-1a",
    );
    expect(all(r, "aws:efs/mountTarget:MountTarget").map((m) => m.inputs.subnetId)).toEqual([
      firstSubnet!.id,
    ]);
  });

  it("GCP zonal Filestore tiers go to the first zone; regional ones stay in the region", async () => {
    const r = await run({
      stack: "gcp",
      overrides: { filesystemTier: "BASIC_SSD", filesystemSizeGb: "2560", allowNonHa: "true" },
    });
    const fsi = one(r, "gcp:filestore/instance:Instance");
    expect(fsi.inputs).toMatchObject({ tier: "BASIC_SSD", location: "europe-west1-b" });
    expect(at(fsi.inputs, "fileShares.capacityGb")).toBe(2560);
    const tooSmall = run({ stack: "gcp", overrides: { filesystemTier: "BASIC_SSD", allowNonHa: "true" } });
    await expect(tooSmall).rejects.toThrow(
      /llm-proxy:filesystemSizeGb is 1024, below the 2560 GB minimum of Filestore BASIC_SSD/,
    );
  });

  it("Azure PostgreSQL: the SKU tier follows the SKU name, and the storage default is a size Azure offers", async () => {
    const r = await run({
      stack: "azure",
      overrides: { postgresSize: "Standard_E4ds_v5", postgresStorageGb: "0" },
    });
    const server = one(r, "azure-native:dbforpostgresql:Server");
    expect(server.inputs.sku).toEqual({ name: "Standard_E4ds_v5", tier: "MemoryOptimized" });
    expect(at(server.inputs, "storage.storageSizeGB")).toBe(128);
    const dev = await run({
      stack: "azure",
      overrides: { postgresSize: "Standard_B2ms", postgresHa: "false", allowNonHa: "true" },
    });
    expect(one(dev, "azure-native:dbforpostgresql:Server").inputs.sku).toEqual({
      name: "Standard_B2ms",
      tier: "Burstable",
    });
    const failed = run({
      stack: "azure",
      overrides: { postgresSize: "Standard_B2ms", postgresStorageGb: "200" },
    });
    await expect(failed).rejects.toThrow(
      /llm-proxy:postgresSize "Standard_B2ms" is Burstable, which has no zone-redundant HA/,
    );
    await expect(failed).rejects.toThrow(
      /llm-proxy:postgresStorageGb is 200, a size Azure Database for PostgreSQL does not offer\. Use one of 32, 64, 128, 256,.*e\.g\. pulumi config set llm-proxy:postgresStorageGb 256/,
    );
  });

  it("an Ingress and an internal LoadBalancer Service when asked for", async () => {
    const r = await run({
      stack: "gcp",
      overrides: { ingressHost: "llm.example.com", ingressTlsSecret: "llm-tls", serviceType: "LoadBalancer" },
    });
    const svc = one(r, K8S.service, "llm-proxy-svc");
    expect(at(svc.inputs, "spec.type")).toBe("LoadBalancer");
    expect(at(svc.inputs, "metadata.annotations")).toEqual({
      "networking.gke.io/load-balancer-type": "Internal",
    });
    // AWS: EKS's built-in service controller makes an internet-facing NLB unless `-internal` is set.
    const aws = await run({ stack: "aws", overrides: { serviceType: "LoadBalancer" } });
    expect(at(one(aws, K8S.service, "llm-proxy-svc").inputs, "metadata.annotations")).toMatchObject({
      "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
      "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    });
    const ing = one(r, K8S.ingress);
    expect(at(ing.inputs, "spec.tls")).toEqual([{ hosts: ["llm.example.com"], secretName: "llm-tls" }]);
    const paths = at(ing.inputs, "spec.rules")[0].http.paths as Array<{
      path: string;
      pathType: string;
      backend: { service: { name: string } };
    }>;
    // The APIs and liveness are routed; /metrics (no authentication) and /readyz are not.
    expect(paths.map((p) => `${p.pathType} ${p.path}`)).toEqual([
      "Prefix /v1",
      "Prefix /internal",
      "Prefix /healthz",
    ]);
    for (const p of paths) expect(p.backend.service.name).toBe(at(svc.outputs, "metadata.name"));
    expect(r.outputs.proxyUrl).toBe("https://llm.example.com");
    validateKubernetesObjects(r);
  });

  it("Chroma can be switched off: no Chroma objects, no CHROMA_URL, only the knowledge-base claim", async () => {
    const r = await run({ stack: "aws", overrides: { chromaEnabled: "false" } });
    expect(all(r, K8S.deployment).map((d) => d.name)).toEqual(["llm-proxy-deployment"]);
    expect(all(r, K8S.statefulSet)).toEqual([]);
    expect(all(r, K8S.pvc).map((c) => c.name)).toEqual(["llm-proxy-kb-pvc"]);
    expect(containerEnv(one(r, K8S.deployment)).CHROMA_URL).toBeUndefined();
  });

  it("an invalid override stops the program with every problem listed", async () => {
    const failed = run({ stack: "azure", overrides: { pdbMinAvailable: "3", cpuTargetPercent: "0" } });
    await expect(failed).rejects.toThrow(/^Invalid llm-proxy stack config:/);
    await expect(failed).rejects.toThrow(
      /llm-proxy:pdbMinAvailable \(3\) must be below llm-proxy:minReplicas \(3\)/,
    );
    await expect(failed).rejects.toThrow(/llm-proxy:cpuTargetPercent is 0, outside 1-100/);
  });
});
