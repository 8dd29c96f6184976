import { X509Certificate } from "node:crypto";
/** Pulumi.aws.yaml + Pulumi.yaml defaults, run under recording mocks: HA, privacy, encryption, protect, wiring. */
import { beforeAll, describe, expect, it } from "vitest";
import type { OfflineRunResult } from "../../scripts/offline-run";
import {
  K8S,
  all,
  assertAppWiring,
  assertWorkloadHardening,
  at,
  isSecretInput,
  one,
  run,
  validateKubernetesObjects,
} from "./helpers";

/** The trust policy of an EKS Pod Identity role: the Pod Identity agent's principal, with session tags. */
const POD_IDENTITY_TRUST = {
  Version: "2012-10-17",
  Statement: [
    {
      Effect: "Allow",
      Principal: { Service: "pods.eks.amazonaws.com" },
      Action: ["sts:AssumeRole", "sts:TagSession"],
    },
  ],
};

/** Compare two dotted numeric versions: negative, zero or positive. */
function compareVersions(a: string, b: string): number {
  const [x, y] = [a, b].map((v) => v.split(".").map(Number));
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

let r: OfflineRunResult;
beforeAll(async () => {
  r = await run({ stack: "aws" });
});

describe("aws stack", () => {
  it("creates a VPC with a private subnet and a NAT gateway in each of the three AZs", () => {
    const vpc = one(r, "aws:ec2/vpc:Vpc");
    expect(vpc.inputs.cidrBlock).toBe("10.40.0.0/16");
    const privateSubnets = all(r, "aws:ec2/subnet:Subnet").filter((s) => s.name.includes("private"));
    expect(privateSubnets.map((s) => s.inputs.availabilityZone)).toEqual([
      "eu-west-1a",
      "eu-west-1b",
      "eu-west-1c",
    ]);
    for (const s of privateSubnets) {
      expect(s.inputs.mapPublicIpOnLaunch).toBe(false);
      expect(s.inputs.vpcId).toBe(vpc.id);
    }
    expect(all(r, "aws:ec2/natGateway:NatGateway")).toHaveLength(3);
  });

  it("runs EKS across the private subnets with encrypted secrets and the EFS CSI driver via Pod Identity", () => {
    const cluster = one(r, "aws:eks/cluster:Cluster");
    const subnetIds = all(r, "aws:ec2/subnet:Subnet")
      .filter((s) => s.name.includes("private"))
      .map((s) => s.id);
    expect(at(cluster.inputs, "vpcConfig.subnetIds")).toEqual(subnetIds);
    expect(at(cluster.inputs, "vpcConfig.endpointPrivateAccess")).toBe(true);
    expect(at(cluster.inputs, "encryptionConfig.resources")).toEqual(["secrets"]);
    expect(at(cluster.inputs, "encryptionConfig.provider.keyArn")).toBe(
      one(r, "aws:kms/key:Key").outputs.arn,
    );
    // One managed node group per private subnet, so per AZ (zone-aware scale-up by the Cluster Autoscaler).
    const nodes = all(r, "aws:eks/nodeGroup:NodeGroup");
    expect(nodes.map((n) => n.name)).toEqual([0, 1, 2].map((i) => `llm-proxy-cluster-nodes-${i}`));
    expect(nodes.map((n) => n.inputs.subnetIds)).toEqual(subnetIds.map((id) => [id]));
    const nodeRole = one(r, "aws:iam/role:Role", "llm-proxy-cluster-node-role");
    const nodePolicies = all(r, "aws:iam/rolePolicyAttachment:RolePolicyAttachment").filter((a) =>
      a.name.startsWith("llm-proxy-cluster-node-policy-"),
    );
    expect(nodePolicies).toHaveLength(3);
    for (const n of nodes) {
      // nodeMinCount 3 split over three AZs; each group may grow to nodeMaxCount (the autoscaler caps the total).
      expect(n.inputs.scalingConfig, n.name).toEqual({ minSize: 1, desiredSize: 1, maxSize: 12 });
      expect(n.inputs).toMatchObject({
        clusterName: cluster.outputs.name,
        nodeRoleArn: nodeRole.outputs.arn,
        instanceTypes: ["m6i.xlarge"],
        amiType: "AL2023_x86_64_STANDARD",
        capacityType: "ON_DEMAND",
        updateConfig: { maxUnavailable: 1 },
      });
      expect(n.inputs.labels).toBeUndefined();
      expect(n.inputs.taints).toBeUndefined();
      expect(n.options.dependencies).toEqual(expect.arrayContaining(nodePolicies.map((a) => a.urn)));
    }
    const efsCsi = one(r, "aws:eks/addon:Addon", "llm-proxy-cluster-efs-csi");
    const role = one(r, "aws:iam/role:Role", "llm-proxy-cluster-efs-csi-role");
    expect(efsCsi.inputs.podIdentityAssociations).toEqual([
      { serviceAccount: "efs-csi-controller-sa", roleArn: role.outputs.arn },
    ]);
    expect(JSON.parse(role.inputs.assumeRolePolicy as string)).toEqual(POD_IDENTITY_TRUST);
    const attachment = one(
      r,
      "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
      "llm-proxy-cluster-efs-csi-policy",
    );
    expect(attachment.inputs).toEqual({
      role: role.outputs.name,
      policyArn: "arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy",
    });
    // The driver starts only once its role has its rights.
    expect(efsCsi.options.dependencies).toContain(attachment.urn);
    const cni = one(r, "aws:eks/addon:Addon", "llm-proxy-cluster-vpc-cni");
    expect(JSON.parse(cni.inputs.configurationValues as string)).toEqual({ enableNetworkPolicy: "true" });
    // Everything that needs running nodes waits for every node group.
    const nodeUrns = nodes.map((n) => n.urn);
    for (const waiting of [cni, efsCsi, one(r, "aws:eks/addon:Addon", "llm-proxy-cluster-pod-identity")]) {
      expect(waiting.options.dependencies, waiting.name).toEqual(expect.arrayContaining(nodeUrns));
    }
    expect(one(r, K8S.provider).options.dependencies).toEqual(expect.arrayContaining(nodeUrns));
  });

  it("installs metrics-server (EKS ships none) after the nodes, and creates the proxy's HPA only after it", () => {
    const cluster = one(r, "aws:eks/cluster:Cluster");
    const metrics = one(r, "aws:eks/addon:Addon", "llm-proxy-cluster-metrics-server");
    expect(metrics.inputs).toMatchObject({ clusterName: cluster.outputs.name, addonName: "metrics-server" });
    const nodeUrns = all(r, "aws:eks/nodeGroup:NodeGroup").map((n) => n.urn);
    expect(nodeUrns).toHaveLength(3);
    expect(metrics.options.dependencies).toEqual(expect.arrayContaining(nodeUrns));
    const hpa = one(r, K8S.hpa);
    expect(hpa.options.dependencies).toContain(metrics.urn);
  });

  it("scales the node groups with the Cluster Autoscaler, which may resize only this cluster's groups", () => {
    const cluster = one(r, "aws:eks/cluster:Cluster");
    const clusterName = cluster.outputs.name as string;
    const nodes = all(r, "aws:eks/nodeGroup:NodeGroup");
    expect(nodes).toHaveLength(3);
    // The autoscaler owns each group's desired size between min and max; Pulumi does not reset it.
    for (const n of nodes) expect(n.options.ignoreChanges, n.name).toEqual(["scalingConfig.desiredSize"]);
    const release = one(r, K8S.helmRelease);
    expect(release.inputs).toMatchObject({
      chart: "cluster-autoscaler",
      repositoryOpts: { repo: "https://kubernetes.github.io/autoscaler" },
      namespace: "kube-system",
    });
    expect(release.inputs.version).toMatch(/^\d+\.\d+\.\d+$/);
    const values = release.inputs.values as any;
    expect(values).toMatchObject({
      cloudProvider: "aws",
      awsRegion: "eu-west-1",
      // The autoscaler's minor version must be the cluster's.
      image: { tag: `v${cluster.inputs.version}.0` },
    });
    // Auto-discovery by the chart's default tags (`k8s.io/cluster-autoscaler/enabled` and
    // `k8s.io/cluster-autoscaler/<autoDiscovery.clusterName>`), which EKS puts on a managed node group's Auto
    // Scaling group itself: no tags override, and the cluster's real (auto-named) name.
    expect(values.autoDiscovery).toEqual({ clusterName });
    expect(clusterName).toMatch(/^llm-proxy-cluster-eks-/);
    expect(values.rbac.serviceAccount).toEqual({ create: true, name: "cluster-autoscaler" });
    // One group per AZ, balanced; every group may grow to nodeMaxCount, so the total is capped here, at 12.
    expect(values.extraArgs).toMatchObject({ "balance-similar-node-groups": true, "max-nodes-total": 12 });
    // From 1.32 the autoscaler lists VolumeAttachments and does not scale without; charts before 9.46.3 deny it.
    expect(compareVersions(release.inputs.version as string, "9.46.3")).toBeGreaterThanOrEqual(0);
    expect(release.options.provider).toBe(`${one(r, K8S.provider).urn}::${one(r, K8S.provider).id}`);
    // Its AWS rights come through Pod Identity, for the service account the chart creates.
    const assoc = one(r, "aws:eks/podIdentityAssociation:PodIdentityAssociation");
    const role = one(r, "aws:iam/role:Role", "llm-proxy-cluster-autoscaler-role");
    expect(assoc.inputs).toMatchObject({
      clusterName,
      namespace: release.inputs.namespace,
      serviceAccount: values.rbac.serviceAccount.name,
      roleArn: role.outputs.arn,
    });
    expect(JSON.parse(role.inputs.assumeRolePolicy as string)).toEqual(POD_IDENTITY_TRUST);
    const rolePolicy = one(r, "aws:iam/rolePolicy:RolePolicy", "llm-proxy-cluster-autoscaler-policy");
    expect(rolePolicy.inputs.role).toBe(role.outputs.name);
    const policy = JSON.parse(rolePolicy.inputs.policy as string);
    // It may resize only the groups carrying the discovery tag of this cluster, with the value EKS gives it.
    const write = policy.Statement.find((s: any) => s.Action.includes("autoscaling:SetDesiredCapacity"));
    expect(write.Condition).toEqual({
      StringEquals: { [`aws:ResourceTag/k8s.io/cluster-autoscaler/${clusterName}`]: "owned" },
    });
    // Installed once the nodes, its identity and the identity's rights exist.
    expect(release.options.dependencies).toEqual(
      expect.arrayContaining([...nodes.map((n) => n.urn), assoc.urn, rolePolicy.urn]),
    );
  });

  it("makes RDS PostgreSQL Multi-AZ, private, encrypted, TLS-only, backed up, deletion-protected and protected", () => {
    const db = one(r, "aws:rds/instance:Instance");
    expect(db.inputs).toMatchObject({
      engine: "postgres",
      engineVersion: "16",
      instanceClass: "db.r6g.large",
      allocatedStorage: 200,
      multiAz: true,
      storageEncrypted: true,
      publiclyAccessible: false,
      deletionProtection: true,
      backupRetentionPeriod: 14,
      skipFinalSnapshot: false,
    });
    expect(db.options.protect).toBe(true);
    expect(isSecretInput(db, "password")).toBe(true);
    const params = one(r, "aws:rds/parameterGroup:ParameterGroup");
    expect(params.inputs.parameters).toEqual([{ name: "rds.force_ssl", value: "1" }]);
    expect(db.inputs.parameterGroupName).toBe(params.outputs.name);
    // Reachable only from the cluster security group.
    const sg = one(r, "aws:ec2/securityGroup:SecurityGroup", "llm-proxy-pg-sg");
    const clusterSg = at(one(r, "aws:eks/cluster:Cluster").outputs, "vpcConfig.clusterSecurityGroupId");
    expect(sg.inputs.ingress).toEqual([
      expect.objectContaining({ fromPort: 5432, toPort: 5432, securityGroups: [clusterSg] }),
    ]);
    expect(JSON.stringify(sg.inputs.ingress)).not.toContain("0.0.0.0/0");
    expect(db.inputs.vpcSecurityGroupIds).toEqual([sg.id]);
  });

  it("makes ElastiCache a multi-AZ replication group with failover, TLS, AUTH and at-rest encryption", () => {
    const rg = one(r, "aws:elasticache/replicationGroup:ReplicationGroup");
    expect(rg.inputs).toMatchObject({
      numCacheClusters: 3,
      automaticFailoverEnabled: true,
      multiAzEnabled: true,
      transitEncryptionEnabled: true,
      atRestEncryptionEnabled: true,
      nodeType: "cache.r7g.large",
    });
    expect(rg.inputs.preferredCacheClusterAzs).toEqual(["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
    expect(isSecretInput(rg, "authToken")).toBe(true);
    expect((rg.inputs.authToken as string).length).toBeGreaterThanOrEqual(32);
    const sg = one(r, "aws:ec2/securityGroup:SecurityGroup", "llm-proxy-redis-sg");
    expect(at(sg.inputs, "ingress")[0]).toMatchObject({ fromPort: 6379, toPort: 6379 });
    expect(rg.options.protect).toBe(false);
  });

  it("makes EFS encrypted with a mount target per AZ, NFS only from the cluster, and its StorageClass", () => {
    const efs = one(r, "aws:efs/fileSystem:FileSystem");
    expect(efs.inputs.encrypted).toBe(true);
    expect(efs.inputs.availabilityZoneName).toBeUndefined();
    expect(efs.options.protect).toBe(true);
    const mts = all(r, "aws:efs/mountTarget:MountTarget");
    const privateIds = all(r, "aws:ec2/subnet:Subnet")
      .filter((s) => s.name.includes("private"))
      .map((s) => s.id);
    expect(mts.map((m) => m.inputs.subnetId)).toEqual(privateIds);
    for (const m of mts) expect(m.inputs.fileSystemId).toBe(efs.id);
    const sg = one(r, "aws:ec2/securityGroup:SecurityGroup", "llm-proxy-fs-sg");
    expect(at(sg.inputs, "ingress")[0]).toMatchObject({ fromPort: 2049, toPort: 2049 });
    const sc = one(r, K8S.storageClass);
    expect(sc.inputs.provisioner).toBe("efs.csi.aws.com");
    expect(sc.inputs.parameters).toMatchObject({
      provisioningMode: "efs-ap",
      fileSystemId: efs.id,
      uid: "10001",
    });
    expect(sc.options.dependencies).toContain(one(r, "aws:eks/addon:Addon", "llm-proxy-cluster-efs-csi").urn);
    expect(r.outputs.filesystemId).toBe(efs.id);
  });

  it("wires the app to the recorded database, Redis and storage outputs", () => {
    const db = one(r, "aws:rds/instance:Instance");
    const rg = one(r, "aws:elasticache/replicationGroup:ReplicationGroup");
    assertAppWiring(r, {
      dbHost: db.outputs.address as string,
      dbPort: 5432,
      dbUser: db.inputs.username as string,
      dbName: db.inputs.dbName as string,
      dbPassword: db.inputs.password as string,
      redisHost: rg.outputs.primaryEndpointAddress as string,
      redisPort: 6379,
      redisToken: rg.inputs.authToken as string,
      dbSslMode: "verify-full",
      dbCa: at(one(r, K8S.configMap).inputs, "data")["database-ca.pem"],
      storageClass: one(r, K8S.storageClass),
    });
    // The database CA is the stack region's RDS root for the CA the instance is pinned to, and nothing else.
    expect(db.inputs.caCertIdentifier).toBe("rds-ca-rsa2048-g1");
    const pem = at(one(r, K8S.configMap).inputs, "data")["database-ca.pem"] as string;
    const certs = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    // The region's three G1 roots: an existing instance on another G1 CA verifies until the pinned one applies.
    expect(certs).toHaveLength(3);
    const names = certs.map((c) =>
      new X509Certificate(c).subject.split("\n").find((l) => l.startsWith("CN=")),
    );
    expect(names.sort()).toEqual([
      "CN=Amazon RDS eu-west-1 Root CA ECC384 G1",
      "CN=Amazon RDS eu-west-1 Root CA RSA2048 G1",
      "CN=Amazon RDS eu-west-1 Root CA RSA4096 G1",
    ]);
    for (const c of certs) {
      const x = new X509Certificate(c);
      expect(x.checkIssued(x)).toBe(true);
      expect(new Date(x.validTo).getTime()).toBeGreaterThan(Date.now());
    }
    // No Redis CA to hand over on AWS (ElastiCache's certificates are publicly trusted).
    expect(JSON.stringify(one(r, K8S.deployment, "llm-proxy-deployment").inputs)).not.toContain(
      "REDIS_TLS_CA",
    );
  });

  it("needs no volume-ownership Job (the platform's volumes are writable for uid 10001)", () => {
    expect(all(r, K8S.job)).toEqual([]);
  });

  it("hardens the workload and spreads it across zones", () => assertWorkloadHardening(r));

  it("produces only Kubernetes objects that validate against the Kubernetes schema", () => {
    expect(validateKubernetesObjects(r)).toBeGreaterThanOrEqual(14);
  });
});
