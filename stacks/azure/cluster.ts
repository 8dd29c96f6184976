/**
 * AKS: a small tainted system pool across the zones plus one autoscaled user pool per zone in the cluster subnet, Azure CNI overlay with Cilium network
 * policy, the Azure Files CSI driver, workload identity. Or an existing cluster from its kubeconfig.
 */
import * as authorization from "@pulumi/azure-native/authorization";
import * as containerservice from "@pulumi/azure-native/containerservice";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { AKS_DNS_SERVICE_IP, AKS_POD_CIDR, AKS_SERVICE_CIDR, type ClusterSettings } from "../config";
import { zonalNodeGroupScaling } from "../node-scaling";
import { AZURE_ROLES, roleDefinitionId } from "./roles";

export interface AzureClusterArgs {
  settings: ClusterSettings;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  /** Availability zones of the node pools ("1", "2", "3"): one user pool per zone. */
  zones: string[];
  subnetId: pulumi.Input<string>;
  tags: Record<string, string>;
}

/** The AKS user-credentials kubeconfig arrives base64 encoded. */
export function decodeKubeconfig(b64: string): string {
  return Buffer.from(b64, "base64").toString("utf8");
}

/**
 * The system pool: AKS needs one pool in System mode for its add-ons (CoreDNS, metrics-server, konnectivity). Two
 * nodes across the zones keep those up through a node loss; the CriticalAddonsOnly taint keeps the proxy and Chroma
 * off it, so their scale-up always goes to a zonal user pool.
 */
export const AKS_SYSTEM_POOL = {
  name: "system",
  minCount: 2,
  maxCount: 3,
  taints: ["CriticalAddonsOnly=true:NoSchedule"],
} as const;

/**
 * One autoscaled user pool per zone (`user1`, `user2`, … after the zone), the Cluster Autoscaler's advice for
 * zone-aware scale-up: a pod that must go to a zone (the proxy's zone spread is DoNotSchedule) grows that zone's
 * pool. `nodeMinCount` is split over the pools like on AWS (zonalNodeGroupScaling); each pool may grow to
 * `nodeMaxCount`. AKS's autoscaler profile has no cluster-wide node ceiling, so that maximum is per zone.
 */
export function aksUserPools(
  minTotal: number,
  maxTotal: number,
  zones: string[],
): { name: string; zone: string; count: number; minCount: number; maxCount: number }[] {
  return zonalNodeGroupScaling(minTotal, maxTotal, zones.length).map(({ min, max }, i) => ({
    name: `user${zones[i]}`,
    zone: zones[i],
    count: min,
    minCount: min,
    maxCount: max,
  }));
}

export class AzureCluster extends pulumi.ComponentResource {
  readonly clusterName: pulumi.Output<string>;
  readonly kubeconfig: pulumi.Output<string>;
  readonly provider: k8s.Provider;
  /** Principal of the cluster's system-assigned identity (for role assignments); undefined when existing. */
  readonly principalId: pulumi.Output<string> | undefined;

  constructor(name: string, args: AzureClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:azure:Cluster", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    if (s.existingKubeconfig) {
      this.kubeconfig = pulumi.secret(s.existingKubeconfig);
      this.provider = new k8s.Provider(`${name}-k8s`, { kubeconfig: this.kubeconfig }, child);
      this.clusterName = pulumi.output("existing");
      this.principalId = undefined;
      this.registerOutputs({ clusterName: this.clusterName });
      return;
    }

    const openApi = s.apiAllowedCidrs.includes("0.0.0.0/0");
    const cluster = new containerservice.ManagedCluster(
      `${name}-aks`,
      {
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        dnsPrefix: name,
        kubernetesVersion: s.kubernetesVersion,
        identity: { type: containerservice.ResourceIdentityType.SystemAssigned },
        sku: {
          name: containerservice.ManagedClusterSKUName.Base,
          tier: containerservice.ManagedClusterSKUTier.Standard,
        },
        agentPoolProfiles: [
          {
            name: AKS_SYSTEM_POOL.name,
            mode: containerservice.AgentPoolMode.System,
            vmSize: s.nodeSize,
            count: AKS_SYSTEM_POOL.minCount,
            minCount: AKS_SYSTEM_POOL.minCount,
            maxCount: AKS_SYSTEM_POOL.maxCount,
            enableAutoScaling: true,
            nodeTaints: [...AKS_SYSTEM_POOL.taints],
            availabilityZones: args.zones,
            vnetSubnetID: args.subnetId,
            osType: containerservice.OSType.Linux,
            osSKU: containerservice.OSSKU.AzureLinux,
            type: containerservice.AgentPoolType.VirtualMachineScaleSets,
          },
        ],
        networkProfile: {
          networkPlugin: containerservice.NetworkPlugin.Azure,
          networkPluginMode: containerservice.NetworkPluginMode.Overlay,
          networkDataplane: containerservice.NetworkDataplane.Cilium,
          networkPolicy: containerservice.NetworkPolicy.Cilium,
          podCidr: AKS_POD_CIDR,
          serviceCidr: AKS_SERVICE_CIDR,
          dnsServiceIP: AKS_DNS_SERVICE_IP,
        },
        // The zonal user pools are alike but for their zone: balancing keeps them at similar sizes.
        autoScalerProfile: { balanceSimilarNodeGroups: "true" },
        storageProfile: { fileCSIDriver: { enabled: true }, diskCSIDriver: { enabled: true } },
        oidcIssuerProfile: { enabled: true },
        securityProfile: { workloadIdentity: { enabled: true } },
        autoUpgradeProfile: { upgradeChannel: containerservice.UpgradeChannel.Patch },
        apiServerAccessProfile: openApi ? undefined : { authorizedIPRanges: s.apiAllowedCidrs },
        tags: args.tags,
      },
      // The autoscaler owns the system pool's node count.
      { ...child, ignoreChanges: ["agentPoolProfiles[0].count"] },
    );

    // One autoscaled user pool per zone (aksUserPools), where the workloads run. The autoscaler owns each count.
    const userPools = aksUserPools(s.nodeMinCount, s.nodeMaxCount, args.zones).map(
      (pool) =>
        new containerservice.AgentPool(
          `${name}-pool-${pool.name}`,
          {
            resourceGroupName: args.resourceGroupName,
            resourceName: cluster.name,
            agentPoolName: pool.name,
            mode: containerservice.AgentPoolMode.User,
            vmSize: s.nodeSize,
            count: pool.count,
            minCount: pool.minCount,
            maxCount: pool.maxCount,
            enableAutoScaling: true,
            availabilityZones: [pool.zone],
            vnetSubnetID: args.subnetId,
            osType: containerservice.OSType.Linux,
            osSKU: containerservice.OSSKU.AzureLinux,
            type: containerservice.AgentPoolType.VirtualMachineScaleSets,
            tags: args.tags,
          },
          { ...child, ignoreChanges: ["count"] },
        ),
    );

    // A cluster on a custom subnet needs Network Contributor there to manage internal load balancers.
    const principalId = cluster.identity.apply((i) => i?.principalId ?? "");
    new authorization.RoleAssignment(
      `${name}-subnet-role`,
      {
        principalId,
        principalType: authorization.PrincipalType.ServicePrincipal,
        roleDefinitionId: pulumi
          .output(args.subnetId)
          .apply((id) => roleDefinitionId(id, AZURE_ROLES.networkContributor)),
        scope: args.subnetId,
      },
      child,
    );

    const creds = containerservice.listManagedClusterUserCredentialsOutput(
      { resourceGroupName: args.resourceGroupName, resourceName: cluster.name },
      child,
    );
    this.kubeconfig = pulumi.secret(creds.kubeconfigs.apply((k) => decodeKubeconfig(k[0].value)));
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig, enableServerSideApply: true },
      // Workloads go to the user pools (the system pool is tainted): create them first.
      { ...child, dependsOn: userPools },
    );
    this.clusterName = cluster.name;
    this.principalId = principalId;
    this.registerOutputs({ clusterName: this.clusterName, kubeconfig: this.kubeconfig });
  }
}
