/**
 * Filestore REGIONAL (replicated across zones; ZONAL / BASIC_* in the first zone on dev stacks) on private services
 * access, exported only to the VPC, and the StorageClass its static PersistentVolumes carry. Filestore CSI dynamic provisioning would create one
 * instance per claim, so the program creates one instance and the app binds its claims to static NFS PVs.
 */
import * as gcp from "@pulumi/gcp";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { FilesystemSettings } from "../config";

export interface GcpFilesystemArgs {
  settings: FilesystemSettings;
  project: string;
  region: string;
  /** Zones of the stack; a zonal tier is created in the first. */
  zones: string[];
  networkName: pulumi.Input<string>;
  psaRangeName: pulumi.Input<string>;
  psaConnection: pulumi.Resource;
  /** Ranges allowed to mount the export (nodes). */
  clientRanges: string[];
  k8sProvider: k8s.Provider;
}

export const FILESTORE_SHARE = "llmproxy";

/** Filestore tiers whose instances span the region; every other tier is created in one zone. */
export const FILESTORE_REGIONAL_TIERS = ["REGIONAL", "ENTERPRISE"];

/**
 * The instance's `location`: the region for a regional tier, else a zone (the provider: "This can be a region for
 * ENTERPRISE tier instances"; its BASIC_* examples use a zone such as us-central1-b).
 */
export function filestoreLocation(tier: string, region: string, zones: string[]): string {
  if (FILESTORE_REGIONAL_TIERS.includes(tier)) return region;
  if (zones.length === 0) throw new Error(`Filestore ${tier} is zonal: set zones (its first entry is used).`);
  return zones[0];
}

export class GcpFilesystem extends pulumi.ComponentResource {
  readonly instanceId: pulumi.Output<string>;
  readonly ip: pulumi.Output<string>;
  readonly storageClassName: pulumi.Output<string>;
  readonly resources: pulumi.Resource[];

  constructor(name: string, args: GcpFilesystemArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:gcp:Filesystem", name, {}, opts);
    const child = { parent: this };

    let location: string;
    try {
      location = filestoreLocation(args.settings.tier, args.region, args.zones);
    } catch (e) {
      throw new pulumi.ResourceError((e as Error).message, this);
    }
    const instance = new gcp.filestore.Instance(
      `${name}-filestore`,
      {
        project: args.project,
        location,
        tier: args.settings.tier,
        protocol: "NFS_V3",
        fileShares: {
          name: FILESTORE_SHARE,
          capacityGb: args.settings.sizeGb,
          nfsExportOptions: [
            { ipRanges: args.clientRanges, accessMode: "READ_WRITE", squashMode: "NO_ROOT_SQUASH" },
          ],
        },
        networks: [
          {
            network: args.networkName,
            modes: ["MODE_IPV4"],
            connectMode: "PRIVATE_SERVICE_ACCESS",
            reservedIpRange: args.psaRangeName,
          },
        ],
        deletionProtectionEnabled: true,
        deletionProtectionReason: "llm-proxy knowledge base and Chroma data",
      },
      { ...child, dependsOn: [args.psaConnection], protect: true },
    );

    // A class for the static PVs (no dynamic provisioning: claims bind to the PVs the app creates).
    const sc = new k8s.storage.v1.StorageClass(
      `${name}-sc`,
      {
        metadata: { name: "llm-proxy-filestore" },
        provisioner: "kubernetes.io/no-provisioner",
        reclaimPolicy: "Retain",
        volumeBindingMode: "Immediate",
      },
      { ...child, provider: args.k8sProvider },
    );
    this.instanceId = instance.id;
    this.ip = instance.networks.apply((n) => n[0]?.ipAddresses?.[0] ?? "");
    this.storageClassName = sc.metadata.name;
    this.resources = [sc, instance];
    this.registerOutputs({ instanceId: this.instanceId, ip: this.ip });
  }
}
