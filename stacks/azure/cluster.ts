/**
 * AKS: a zone-spread autoscaling system pool in the cluster subnet, Azure CNI overlay with Cilium network
 * policy, the Azure Files CSI driver, workload identity. Or an existing cluster from its kubeconfig.
 */
import * as authorization from "@pulumi/azure-native/authorization";
import * as containerservice from "@pulumi/azure-native/containerservice";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { ClusterSettings } from "../config";
import { AZURE_ROLES, roleDefinitionId } from "./roles";

export interface AzureClusterArgs {
  settings: ClusterSettings;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  /** Availability zones of the node pool ("1", "2", "3"). */
  zones: string[];
  subnetId: pulumi.Input<string>;
  tags: Record<string, string>;
}

/** The AKS user-credentials kubeconfig arrives base64 encoded. */
export function decodeKubeconfig(b64: string): string {
  return Buffer.from(b64, "base64").toString("utf8");
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
            name: "system",
            mode: containerservice.AgentPoolMode.System,
            vmSize: s.nodeSize,
            count: s.nodeMinCount,
            minCount: s.nodeMinCount,
            maxCount: s.nodeMaxCount,
            enableAutoScaling: true,
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
          podCidr: "192.168.0.0/16",
          serviceCidr: "172.16.0.0/16",
          dnsServiceIP: "172.16.0.10",
        },
        storageProfile: { fileCSIDriver: { enabled: true }, diskCSIDriver: { enabled: true } },
        oidcIssuerProfile: { enabled: true },
        securityProfile: { workloadIdentity: { enabled: true } },
        autoUpgradeProfile: { upgradeChannel: containerservice.UpgradeChannel.Patch },
        apiServerAccessProfile: openApi ? undefined : { authorizedIPRanges: s.apiAllowedCidrs },
        tags: args.tags,
      },
      child,
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
      child,
    );
    this.clusterName = cluster.name;
    this.principalId = principalId;
    this.registerOutputs({ clusterName: this.clusterName, kubeconfig: this.kubeconfig });
  }
}
