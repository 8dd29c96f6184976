/**
 * EKS: a cluster with envelope-encrypted secrets, one managed node group per private subnet (and so per AZ) scaled
 * by the Cluster Autoscaler, VPC CNI network policies, metrics-server for the HPA, and the EFS CSI driver; both
 * drivers get their IAM through EKS Pod Identity. Or an existing cluster.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { ClusterSettings } from "../config";
import { zonalNodeGroupScaling } from "../node-scaling";

export interface AwsClusterArgs {
  settings: ClusterSettings;
  /** Private subnets across AZs for the control plane ENIs and the nodes. */
  subnetIds: pulumi.Input<string>[];
  /** AWS region, for the kubeconfig's get-token call. */
  region: string;
  tags: Record<string, string>;
}

/** Kubeconfig (JSON is valid YAML) using `aws eks get-token`; the aws CLI must be where `pulumi` runs. */
export function eksKubeconfig(clusterName: string, endpoint: string, caData: string, region: string): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: clusterName, cluster: { server: endpoint, "certificate-authority-data": caData } }],
    contexts: [{ name: clusterName, context: { cluster: clusterName, user: clusterName } }],
    "current-context": clusterName,
    users: [
      {
        name: clusterName,
        user: {
          exec: {
            apiVersion: "client.authentication.k8s.io/v1beta1",
            command: "aws",
            args: ["eks", "get-token", "--cluster-name", clusterName, "--region", region],
          },
        },
      },
    ],
  });
}

/**
 * Cluster Autoscaler Helm chart (kubernetes/autoscaler), pinned: 9.50.1 is a chart for Cluster Autoscaler 1.33.
 * The image follows the cluster's minor version (below), so the chart must be one whose ClusterRole covers it:
 * from 1.32 the autoscaler watches VolumeAttachments and waits for that cache before it scales, and only charts
 * from 9.46.3 let it list them (kubernetes/autoscaler#7663).
 */
export const CLUSTER_AUTOSCALER_CHART = {
  chart: "cluster-autoscaler",
  version: "9.50.1",
  repo: "https://kubernetes.github.io/autoscaler",
};
/** Where the Cluster Autoscaler runs, and the service account its Pod Identity association names. */
export const CLUSTER_AUTOSCALER_NAMESPACE = "kube-system";
export const CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler";

/**
 * The Cluster Autoscaler image for a Kubernetes minor version: its minor must match the cluster's
 * (`1.33` → `v1.33.0`; every minor has a `.0` release).
 */
export function clusterAutoscalerImageTag(kubernetesVersion: string): string {
  const m = /^(\d+)\.(\d+)/.exec(kubernetesVersion);
  if (!m) throw new Error(`"${kubernetesVersion}" is not a Kubernetes version such as 1.33.`);
  return `v${m[1]}.${m[2]}.0`;
}

/**
 * IAM policy of the Cluster Autoscaler (the AWS provider README's actions): read the node groups, and change the
 * size only of Auto Scaling groups tagged as this cluster's (`k8s.io/cluster-autoscaler/<cluster>` = `owned`).
 * EKS puts that tag and `k8s.io/cluster-autoscaler/enabled` on a managed node group's Auto Scaling group itself
 * ("automatically tagged for auto-discovery by the Kubernetes Cluster Autoscaler",
 * https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html); they are the chart's default
 * `autoDiscovery.tags`.
 */
export function clusterAutoscalerPolicy(clusterName: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Effect: "Allow",
        Action: [
          "autoscaling:DescribeAutoScalingGroups",
          "autoscaling:DescribeAutoScalingInstances",
          "autoscaling:DescribeLaunchConfigurations",
          "autoscaling:DescribeScalingActivities",
          "autoscaling:DescribeTags",
          "ec2:DescribeImages",
          "ec2:DescribeInstanceTypes",
          "ec2:DescribeLaunchTemplateVersions",
          "ec2:GetInstanceTypesFromInstanceRequirements",
          "eks:DescribeNodegroup",
        ],
        Resource: "*",
      },
      {
        Effect: "Allow",
        Action: ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
        Resource: "*",
        Condition: {
          StringEquals: { [`aws:ResourceTag/k8s.io/cluster-autoscaler/${clusterName}`]: "owned" },
        },
      },
    ],
  });
}

/**
 * Scaling of the per-AZ node groups (one per private subnet) from the cluster-wide `nodeMinCount` and
 * `nodeMaxCount`, split by zonalNodeGroupScaling: the minimums (and initial desired sizes) add up to `minTotal`,
 * every group's maximum is `maxTotal`, and the Cluster Autoscaler's `max-nodes-total` (clusterAutoscalerValues)
 * keeps the sum at `maxTotal`.
 */
export function awsNodeGroupScaling(
  minTotal: number,
  maxTotal: number,
  groups: number,
): { minSize: number; desiredSize: number; maxSize: number }[] {
  return zonalNodeGroupScaling(minTotal, maxTotal, groups).map(({ min, max }) => ({
    minSize: min,
    desiredSize: min,
    maxSize: max,
  }));
}

/**
 * Helm values of the Cluster Autoscaler: discover this cluster's node groups by their tags, and stop at
 * `maxNodesTotal` nodes in all.
 */
export function clusterAutoscalerValues(
  clusterName: string,
  region: string,
  kubernetesVersion: string,
  maxNodesTotal: number,
) {
  return {
    cloudProvider: "aws",
    awsRegion: region,
    autoDiscovery: { clusterName },
    image: {
      repository: "registry.k8s.io/autoscaling/cluster-autoscaler",
      tag: clusterAutoscalerImageTag(kubernetesVersion),
    },
    rbac: { serviceAccount: { create: true, name: CLUSTER_AUTOSCALER_SERVICE_ACCOUNT } },
    extraArgs: {
      // One node group per AZ (the autoscaler's advice for zone-aware scale-up): a pending pod that must go to a
      // zone grows that zone's group, and balancing keeps the groups at similar sizes (the AWS comparator ignores
      // the per-group `eks.amazonaws.com/nodegroup` label).
      "balance-similar-node-groups": true,
      // Every node group may grow to nodeMaxCount (awsNodeGroupScaling): the cluster-wide ceiling is this.
      "max-nodes-total": maxNodesTotal,
      expander: "least-waste",
      "skip-nodes-with-system-pods": false,
      "scale-down-unneeded-time": "10m",
    },
    resources: { requests: { cpu: "100m", memory: "300Mi" }, limits: { memory: "600Mi" } },
  };
}

/** Trust policy for a role assumed by `service` (e.g. eks.amazonaws.com). */
export function assumeRolePolicy(service: string, actions: string[] = ["sts:AssumeRole"]): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Principal: { Service: service }, Action: actions }],
  });
}

/** What a Pod Identity role may do: one AWS managed policy attached, or an inline policy document. */
export type PodIdentityPermissions = { policyArn: pulumi.Input<string> } | { policy: pulumi.Input<string> };

/**
 * An IAM role for EKS Pod Identity: `<name>-role`, trusted by pods.eks.amazonaws.com for sts:AssumeRole and
 * sts:TagSession (Pod Identity needs both), and `<name>-policy` granting `permissions` (a RolePolicyAttachment
 * or an inline RolePolicy). The caller associates the role with its service account (an add-on's
 * `podIdentityAssociations` or an `aws.eks.PodIdentityAssociation`) and should make the workload depend on
 * `policy`, so the pods never start with a role that has no rights yet.
 */
export function podIdentityRole(
  name: string,
  permissions: PodIdentityPermissions,
  tags: Record<string, string>,
  opts: pulumi.CustomResourceOptions,
): { role: aws.iam.Role; policy: aws.iam.RolePolicyAttachment | aws.iam.RolePolicy } {
  const role = new aws.iam.Role(
    `${name}-role`,
    {
      assumeRolePolicy: assumeRolePolicy("pods.eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"]),
      tags,
    },
    opts,
  );
  const policy =
    "policyArn" in permissions
      ? new aws.iam.RolePolicyAttachment(
          `${name}-policy`,
          { role: role.name, policyArn: permissions.policyArn },
          opts,
        )
      : new aws.iam.RolePolicy(`${name}-policy`, { role: role.name, policy: permissions.policy }, opts);
  return { role, policy };
}

export class AwsCluster extends pulumi.ComponentResource {
  readonly clusterName: pulumi.Output<string>;
  readonly kubeconfig: pulumi.Output<string>;
  readonly provider: k8s.Provider;
  /** The EKS cluster security group (nodes and pods); undefined for an existing cluster. */
  readonly securityGroupId: pulumi.Output<string> | undefined;
  /** Resources the StorageClass must wait for (the EFS CSI driver). */
  readonly storageDriver: pulumi.Resource[];
  /** The Cluster Autoscaler's Helm release; undefined for an existing cluster. */
  readonly autoscaler: k8s.helm.v3.Release | undefined;
  /** The metrics-server add-on the HPA needs; undefined for an existing cluster (which must run its own). */
  readonly metricsServer: aws.eks.Addon | undefined;

  constructor(name: string, args: AwsClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:aws:Cluster", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    if (s.existingKubeconfig) {
      this.kubeconfig = pulumi.secret(s.existingKubeconfig);
      this.provider = new k8s.Provider(`${name}-k8s`, { kubeconfig: this.kubeconfig }, child);
      this.clusterName = pulumi.output("existing");
      this.securityGroupId = undefined;
      this.storageDriver = [];
      this.autoscaler = undefined;
      this.metricsServer = undefined;
      this.registerOutputs({ clusterName: this.clusterName });
      return;
    }

    // Control plane role and a KMS key for envelope encryption of Kubernetes Secrets.
    const clusterRole = new aws.iam.Role(
      `${name}-cluster-role`,
      {
        assumeRolePolicy: assumeRolePolicy("eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"]),
        tags: args.tags,
      },
      child,
    );
    const clusterPolicy = new aws.iam.RolePolicyAttachment(
      `${name}-cluster-policy`,
      { role: clusterRole.name, policyArn: aws.iam.ManagedPolicy.AmazonEKSClusterPolicy },
      child,
    );
    const secretsKey = new aws.kms.Key(
      `${name}-secrets-key`,
      { description: `${name} Kubernetes secrets encryption`, enableKeyRotation: true, tags: args.tags },
      child,
    );

    // The cluster: private endpoint for nodes, public endpoint restricted to apiAllowedCidrs for `pulumi up`.
    const cluster = new aws.eks.Cluster(
      `${name}-eks`,
      {
        roleArn: clusterRole.arn,
        version: s.kubernetesVersion,
        vpcConfig: {
          subnetIds: args.subnetIds,
          endpointPrivateAccess: true,
          endpointPublicAccess: true,
          publicAccessCidrs: s.apiAllowedCidrs,
        },
        accessConfig: {
          authenticationMode: "API_AND_CONFIG_MAP",
          bootstrapClusterCreatorAdminPermissions: true,
        },
        encryptionConfig: { provider: { keyArn: secretsKey.arn }, resources: ["secrets"] },
        enabledClusterLogTypes: ["api", "audit", "authenticator"],
        tags: args.tags,
      },
      { ...child, dependsOn: [clusterPolicy] },
    );

    // Managed nodes, one group per private subnet (and so per AZ), sized by awsNodeGroupScaling. The Cluster
    // Autoscaler (below) owns each group's desired size between min and max, so Pulumi ignores it after creation.
    // EKS rejects a minimum above the current desired size: raising nodeMinCount past the running node count
    // needs `aws eks update-nodegroup-config --scaling-config desiredSize=<n>` first (README, Scaling guidance).
    const nodeRole = new aws.iam.Role(
      `${name}-node-role`,
      { assumeRolePolicy: assumeRolePolicy("ec2.amazonaws.com"), tags: args.tags },
      child,
    );
    const nodePolicies = [
      aws.iam.ManagedPolicy.AmazonEKSWorkerNodePolicy,
      aws.iam.ManagedPolicy.AmazonEKS_CNI_Policy,
      aws.iam.ManagedPolicy.AmazonEC2ContainerRegistryReadOnly,
    ].map(
      (policyArn, i) =>
        new aws.iam.RolePolicyAttachment(
          `${name}-node-policy-${i}`,
          { role: nodeRole.name, policyArn },
          child,
        ),
    );
    const scaling = awsNodeGroupScaling(s.nodeMinCount, s.nodeMaxCount, args.subnetIds.length);
    const nodes = args.subnetIds.map(
      (subnetId, i) =>
        new aws.eks.NodeGroup(
          `${name}-nodes-${i}`,
          {
            clusterName: cluster.name,
            nodeRoleArn: nodeRole.arn,
            subnetIds: [subnetId],
            instanceTypes: [s.nodeSize],
            amiType: "AL2023_x86_64_STANDARD",
            capacityType: "ON_DEMAND",
            scalingConfig: scaling[i],
            updateConfig: { maxUnavailable: 1 },
            tags: args.tags,
          },
          { ...child, dependsOn: nodePolicies, ignoreChanges: ["scalingConfig.desiredSize"] },
        ),
    );

    // Add-ons: VPC CNI with NetworkPolicy enforcement, the Pod Identity agent, metrics-server, the EFS CSI driver.
    const cni = new aws.eks.Addon(
      `${name}-vpc-cni`,
      {
        clusterName: cluster.name,
        addonName: "vpc-cni",
        configurationValues: JSON.stringify({ enableNetworkPolicy: "true" }),
        resolveConflictsOnCreate: "OVERWRITE",
        resolveConflictsOnUpdate: "OVERWRITE",
      },
      { ...child, dependsOn: nodes },
    );
    const podIdentity = new aws.eks.Addon(
      `${name}-pod-identity`,
      { clusterName: cluster.name, addonName: "eks-pod-identity-agent" },
      { ...child, dependsOn: nodes },
    );
    // EKS ships no resource metrics API, without which the proxy's CPU HorizontalPodAutoscaler never scales:
    // metrics-server as the EKS community add-on (the default version for the cluster's Kubernetes version).
    this.metricsServer = new aws.eks.Addon(
      `${name}-metrics-server`,
      {
        clusterName: cluster.name,
        addonName: "metrics-server",
        resolveConflictsOnCreate: "OVERWRITE",
        tags: args.tags,
      },
      { ...child, dependsOn: nodes },
    );
    const efsCsiAccess = podIdentityRole(
      `${name}-efs-csi`,
      { policyArn: aws.iam.ManagedPolicy.AmazonEFSCSIDriverPolicy },
      args.tags,
      child,
    );
    const efsCsi = new aws.eks.Addon(
      `${name}-efs-csi`,
      {
        clusterName: cluster.name,
        addonName: "aws-efs-csi-driver",
        podIdentityAssociations: [
          { serviceAccount: "efs-csi-controller-sa", roleArn: efsCsiAccess.role.arn },
        ],
      },
      { ...child, dependsOn: [...nodes, podIdentity, efsCsiAccess.policy] },
    );

    this.kubeconfig = pulumi.secret(
      pulumi
        .all([cluster.name, cluster.endpoint, cluster.certificateAuthority])
        .apply(([n, endpoint, ca]) => eksKubeconfig(n, endpoint, ca.data ?? "", args.region)),
    );
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig, enableServerSideApply: true },
      { ...child, dependsOn: [...nodes, cni] },
    );

    // Cluster Autoscaler: adds nodes (up to nodeMaxCount) when pods are Pending and removes idle ones (down to
    // nodeMinCount), with AWS rights through Pod Identity limited to this cluster's Auto Scaling groups.
    const autoscalerAccess = podIdentityRole(
      `${name}-autoscaler`,
      { policy: cluster.name.apply(clusterAutoscalerPolicy) },
      args.tags,
      child,
    );
    const autoscalerIdentity = new aws.eks.PodIdentityAssociation(
      `${name}-autoscaler-identity`,
      {
        clusterName: cluster.name,
        namespace: CLUSTER_AUTOSCALER_NAMESPACE,
        serviceAccount: CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
        roleArn: autoscalerAccess.role.arn,
        tags: args.tags,
      },
      { ...child, dependsOn: [podIdentity] },
    );
    this.autoscaler = new k8s.helm.v3.Release(
      `${name}-autoscaler`,
      {
        chart: CLUSTER_AUTOSCALER_CHART.chart,
        version: CLUSTER_AUTOSCALER_CHART.version,
        repositoryOpts: { repo: CLUSTER_AUTOSCALER_CHART.repo },
        namespace: CLUSTER_AUTOSCALER_NAMESPACE,
        values: cluster.name.apply((n) =>
          clusterAutoscalerValues(n, args.region, s.kubernetesVersion, s.nodeMaxCount),
        ),
      },
      {
        ...child,
        provider: this.provider,
        dependsOn: [...nodes, autoscalerIdentity, autoscalerAccess.policy],
      },
    );

    this.clusterName = cluster.name;
    this.securityGroupId = cluster.vpcConfig.clusterSecurityGroupId;
    this.storageDriver = [efsCsi];
    this.registerOutputs({ clusterName: this.clusterName, kubeconfig: this.kubeconfig });
  }
}
