/**
 * EFS: encrypted, Regional (multi-AZ), a mount target per private subnet, NFS only from the cluster, backups
 * on; plus the StorageClass whose claims become access points (uid/gid 10001) on this file system.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { clientSecurityGroup, type AwsClients } from "./security";

export interface AwsFilesystemArgs {
  vpcId: pulumi.Input<string>;
  /** One mount target per subnet (one per AZ). */
  subnetIds: pulumi.Input<string>[];
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
    // Knowledge base and Chroma data live here: encrypted, Regional, protected against accidental deletion.
    const fs = new aws.efs.FileSystem(
      `${name}-efs`,
      {
        encrypted: true,
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
    const mountTargets = args.subnetIds.map(
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
