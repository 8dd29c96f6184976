/**
 * Azure Files NFS: a Premium ZRS FileStorage account reachable only from the cluster subnet, one NFS share the
 * program creates (quota `filesystemSizeGb`), and the StorageClass its static PersistentVolumes carry.
 *
 * Why static, not the CSI driver's dynamic provisioning: for an NFS claim the azurefile driver's CreateVolume
 * always updates subnet service endpoints, and without a subnet name it lists and rewrites every subnet of the
 * VNet (the PostgreSQL-delegated and private-endpoint subnets included), which the cluster identity may not do
 * and which Pulumi would then see as drift. A share Pulumi creates skips CreateVolume altogether, and the
 * claims bind to static NFS PVs on it (as on GCP), mounted with subPaths.
 */
import * as storage from "@pulumi/azure-native/storage";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { FilesystemSettings } from "../config";
import type { StaticNfsVolume } from "../platform";

export interface AzureFilesystemArgs {
  settings: FilesystemSettings;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  /** Only this subnet (the cluster's, with a Microsoft.Storage service endpoint) may reach the account. */
  clusterSubnetId: pulumi.Input<string>;
  k8sProvider: k8s.Provider;
  tags: Record<string, string>;
}

/** Name of the NFS share the claims live on. */
export const AZURE_SHARE = "llmproxy";

/**
 * How nodes mount an Azure Files NFS share (Microsoft's Linux mount instructions: NFS 4.1, `sec=sys`), plus
 * `nconnect` for throughput and `noresvport` so a reconnect after a network blip gets a fresh port.
 */
export const AZURE_NFS_MOUNT_OPTIONS = [
  "vers=4",
  "minorversion=1",
  "sec=sys",
  "nconnect=4",
  "noresvport",
  "actimeo=30",
];

/** The NFS export of `share` in `account`: `<account>.file.core.windows.net:/<account>/<share>`. */
export function azureNfsExport(account: string, share: string): { server: string; path: string } {
  return { server: `${account}.file.core.windows.net`, path: `/${account}/${share}` };
}

export class AzureFilesystem extends pulumi.ComponentResource {
  readonly accountId: pulumi.Output<string>;
  readonly storageClassName: pulumi.Output<string>;
  /** The share as an NFS export for the app's static PersistentVolumes. */
  readonly nfs: StaticNfsVolume;
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

    // The share holding the knowledge base and Chroma data: its quota is the provisioned (billed) capacity.
    // NoRootSquash so the one-shot ownership Job can hand the sub-paths to the proxy's uid.
    const share = new storage.FileShare(
      `${name}-share`,
      {
        resourceGroupName: args.resourceGroupName,
        accountName: account.name,
        shareName: AZURE_SHARE,
        enabledProtocols: storage.EnabledProtocols.NFS,
        rootSquash: storage.RootSquashType.NoRootSquash,
        shareQuota: args.settings.sizeGb,
      },
      { ...child, protect: true },
    );

    // A class for the static PVs (no dynamic provisioning: claims bind to the PVs the app creates).
    const sc = new k8s.storage.v1.StorageClass(
      `${name}-sc`,
      {
        metadata: { name: "llm-proxy-azurefile-nfs" },
        provisioner: "kubernetes.io/no-provisioner",
        reclaimPolicy: "Retain",
        volumeBindingMode: "Immediate",
      },
      { ...child, provider: args.k8sProvider },
    );
    const nfsExport = account.name.apply((a) => azureNfsExport(a, AZURE_SHARE));
    this.accountId = account.id;
    this.storageClassName = sc.metadata.name;
    this.nfs = {
      server: nfsExport.server,
      path: nfsExport.path,
      mountOptions: AZURE_NFS_MOUNT_OPTIONS,
    };
    this.resources = [sc, share];
    this.registerOutputs({ accountId: this.accountId, storageClassName: this.storageClassName });
  }
}
