/**
 * EFS: encrypted, Regional (multi-AZ) with a mount target per private subnet — or One Zone (dev stacks) with one
 * mount target in the first zone —, NFS only from the cluster, backups on; plus the StorageClass whose claims
 * become access points (uid/gid 10001) on this file system.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { FilesystemSettings } from "../config";
import { clientSecurityGroup, type AwsClients } from "./security";

/** EFS storage classes `filesystemTier` selects: Regional (multi-AZ) or One Zone. */
export const EFS_TIERS = { regional: "Regional", oneZone: "OneZone" } as const;

export interface AwsFilesystemArgs {
  settings: FilesystemSettings;
  vpcId: pulumi.Input<string>;
  /** Private subnets, exactly one per AZ (EFS allows one mount target per AZ). */
  subnetIds: pulumi.Input<string>[];
  /** AZ of each subnet, same order; One Zone places the file system in the first. */
  zones: string[];
  clients: AwsClients;
  k8sProvider: k8s.Provider;
  /** The EFS CSI driver add-on: the StorageClass waits for it. */
  driver: pulumi.Resource[];
  /** uid/gid the access points give files to (the proxy's uid). */
  uid: number;
  tags: Record<string, string>;
}

/** StorageClass parameters for EFS access-point provisioning. */
export function efsStorageClassParameters(fileSystemId: string, uid: number): Record<string, string> {
  return {
    provisioningMode: "efs-ap",
    fileSystemId,
    directoryPerms: "770",
    uid: String(uid),
    gid: String(uid),
    basePath: "/llm-proxy",
    ensureUniqueDirectory: "true",
  };
}

/**
 * Where the file system lives and which subnets get a mount target: every subnet for Regional; for One Zone the
 * first zone and only its subnet (EFS: a One Zone file system has a single mount target, in its own AZ).
 */
export function efsPlacement<T>(
  tier: string,
  subnetIds: T[],
  zones: string[],
): { availabilityZoneName?: string; mountSubnets: T[] } {
  if (tier !== EFS_TIERS.oneZone) return { mountSubnets: subnetIds };
  if (zones.length === 0 || subnetIds.length === 0) {
    throw new Error("EFS One Zone needs the zone and subnet to place it in: set zones (its first entry).");
  }
  return { availabilityZoneName: zones[0], mountSubnets: subnetIds.slice(0, 1) };
}

export class AwsFilesystem extends pulumi.ComponentResource {
  readonly fileSystemId: pulumi.Output<string>;
  readonly storageClassName: pulumi.Output<string>;
  readonly resources: pulumi.Resource[];

  constructor(name: string, args: AwsFilesystemArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:aws:Filesystem", name, {}, opts);
    const child = { parent: this };

    const sg = clientSecurityGroup(
      `${name}-sg`,
      {
        vpcId: args.vpcId,
        port: 2049,
        clients: args.clients,
        description: "NFS from the cluster",
        tags: args.tags,
      },
      child,
    );
    let placement: { availabilityZoneName?: string; mountSubnets: pulumi.Input<string>[] };
    try {
      placement = efsPlacement(args.settings.tier, args.subnetIds, args.zones);
    } catch (e) {
      throw new pulumi.ResourceError((e as Error).message, this);
    }
    // Knowledge base and Chroma data live here: encrypted, Regional (unless a dev stack chose One Zone),
    // protected against accidental deletion.
    const fs = new aws.efs.FileSystem(
      `${name}-efs`,
      {
        encrypted: true,
        ...(placement.availabilityZoneName ? { availabilityZoneName: placement.availabilityZoneName } : {}),
        performanceMode: "generalPurpose",
        throughputMode: "elastic",
        lifecyclePolicies: [{ transitionToIa: "AFTER_30_DAYS" }],
        tags: { ...args.tags, Name: `${name}-efs` },
      },
      { ...child, protect: true },
    );
    new aws.efs.BackupPolicy(
      `${name}-backup`,
      { fileSystemId: fs.id, backupPolicy: { status: "ENABLED" } },
      child,
    );
    const mountTargets = placement.mountSubnets.map(
      (subnetId, i) =>
        new aws.efs.MountTarget(
          `${name}-mt-${i}`,
          { fileSystemId: fs.id, subnetId, securityGroups: [sg.id] },
          child,
        ),
    );

    // The StorageClass the app's claims use.
    const sc = new k8s.storage.v1.StorageClass(
      `${name}-sc`,
      {
        metadata: { name: "llm-proxy-efs" },
        provisioner: "efs.csi.aws.com",
        parameters: fs.id.apply((id) => efsStorageClassParameters(id, args.uid)),
        reclaimPolicy: "Retain",
        volumeBindingMode: "Immediate",
        mountOptions: ["tls"],
      },
      { ...child, provider: args.k8sProvider, dependsOn: [...args.driver, ...mountTargets] },
    );
    this.fileSystemId = fs.id;
    this.storageClassName = sc.metadata.name;
    this.resources = [sc, ...mountTargets];
    this.registerOutputs({ fileSystemId: this.fileSystemId, storageClassName: this.storageClassName });
  }
}
