/**
 * Azure Files NFS on a Premium ZRS FileStorage account reachable only from the cluster subnet, and the
 * StorageClass whose claims become NFS shares in that account (file.csi.azure.com).
 */
import * as authorization from "@pulumi/azure-native/authorization";
import * as storage from "@pulumi/azure-native/storage";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { FilesystemSettings } from "../config";
import { AZURE_ROLES, roleDefinitionId } from "./roles";

export interface AzureFilesystemArgs {
  settings: FilesystemSettings;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  /** Only this subnet (the cluster's) may reach the account. */
  clusterSubnetId: pulumi.Input<string>;
  /** Cluster identity that provisions shares (CSI driver); undefined for an existing cluster. */
  clusterPrincipalId?: pulumi.Input<string>;
  k8sProvider: k8s.Provider;
  tags: Record<string, string>;
}

/** StorageClass parameters for NFS shares in our account. */
export function azureFilesStorageClassParameters(account: string, resourceGroup: string, sku: string) {
  return { protocol: "nfs", skuName: sku, storageAccount: account, resourceGroup };
}

export class AzureFilesystem extends pulumi.ComponentResource {
  readonly accountId: pulumi.Output<string>;
  readonly storageClassName: pulumi.Output<string>;
  readonly resources: pulumi.Resource[];

  constructor(name: string, args: AzureFilesystemArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:azure:Filesystem", name, {}, opts);
    const child = { parent: this };

    // NFS 4.1 needs a Premium FileStorage account; secure transfer is an SMB/HTTPS setting and must be off
    // for NFS, whose traffic stays inside the VNet (network rules deny everything else).
    const account = new storage.StorageAccount(
      `${name}sa`.replace(/[^a-z0-9]/g, "").slice(0, 20),
      {
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        kind: storage.Kind.FileStorage,
        sku: { name: args.settings.tier },
        enableHttpsTrafficOnly: false,
        minimumTlsVersion: storage.MinimumTlsVersion.TLS1_2,
        allowBlobPublicAccess: false,
        networkRuleSet: {
          defaultAction: storage.DefaultAction.Deny,
          bypass: storage.Bypass.AzureServices,
          virtualNetworkRules: [{ virtualNetworkResourceId: args.clusterSubnetId }],
        },
        tags: args.tags,
      },
      { ...child, protect: true },
    );

    const deps: pulumi.Resource[] = [account];
    if (args.clusterPrincipalId) {
      // The CSI driver creates the shares with the cluster's identity.
      deps.push(
        new authorization.RoleAssignment(
          `${name}-csi-role`,
          {
            principalId: args.clusterPrincipalId,
            principalType: authorization.PrincipalType.ServicePrincipal,
            roleDefinitionId: account.id.apply((id) =>
              roleDefinitionId(id, AZURE_ROLES.storageAccountContributor),
            ),
            scope: account.id,
          },
          child,
        ),
      );
    }

    const sc = new k8s.storage.v1.StorageClass(
      `${name}-sc`,
      {
        metadata: { name: "llm-proxy-azurefile-nfs" },
        provisioner: "file.csi.azure.com",
        parameters: pulumi
          .all([account.name, pulumi.output(args.resourceGroupName)])
          .apply(([a, rg]) => azureFilesStorageClassParameters(a, rg, args.settings.tier)),
        reclaimPolicy: "Retain",
        volumeBindingMode: "Immediate",
        allowVolumeExpansion: true,
        mountOptions: ["nconnect=4", "noresvport", "actimeo=30"],
      },
      { ...child, provider: args.k8sProvider, dependsOn: deps },
    );
    this.accountId = account.id;
    this.storageClassName = sc.metadata.name;
    this.resources = [sc];
    this.registerOutputs({ accountId: this.accountId, storageClassName: this.storageClassName });
  }
}
