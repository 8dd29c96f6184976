// Shared (ReadWriteMany) filesystem invariants: encrypted, and surviving the loss of a zone, so the
// knowledge base and Chroma's data can follow pods into another zone.
import { ResourceValidationPolicy, validateResourceOfType } from "@pulumi/policy";
import * as efs from "@pulumi/aws/efs";
import * as storage from "@pulumi/azure-native/storage";
import * as filestore from "@pulumi/gcp/filestore";
import * as k8sStorage from "@pulumi/kubernetes/storage/v1";

/** Filestore tiers whose instances are regional (replicated across zones). */
const FILESTORE_REGIONAL_TIERS: readonly string[] = ["REGIONAL", "ENTERPRISE"];

export const filesystemEncrypted: ResourceValidationPolicy = {
  name: "filesystem-encrypted",
  description:
    "The shared filesystem is encrypted at rest. EFS makes it optional; Azure Files and Filestore always encrypt.",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(efs.FileSystem, (fs, _args, report) => {
      if (fs.encrypted !== true) report("EFS must set encrypted: true.");
    }),
  ],
};

export const filesystemZoneRedundant: ResourceValidationPolicy = {
  name: "filesystem-zone-redundant",
  description:
    "The shared filesystem survives the loss of a zone (EFS Regional, Azure Files Premium_ZRS, regional Filestore).",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(efs.FileSystem, (fs, _args, report) => {
      if (fs.availabilityZoneName) {
        report(`EFS must be Regional: availabilityZoneName (${fs.availabilityZoneName}) makes it One Zone.`);
      }
    }),
    validateResourceOfType(storage.StorageAccount, (account, _args, report) => {
      // Only FileStorage accounts carry NFS shares; other accounts (e.g. diagnostics) are out of scope.
      if (account.kind === "FileStorage" && account.sku?.name !== "Premium_ZRS") {
        report(`FileStorage account must use sku Premium_ZRS (got ${account.sku?.name ?? "none"}).`);
      }
    }),
    validateResourceOfType(filestore.Instance, (instance, _args, report) => {
      if (!FILESTORE_REGIONAL_TIERS.includes(instance.tier)) {
        report(`Filestore must use tier ${FILESTORE_REGIONAL_TIERS.join(" or ")} (got ${instance.tier}).`);
      }
    }),
    // Dynamically provisioned shares inherit the class's settings.
    validateResourceOfType(k8sStorage.StorageClass, (sc, _args, report) => {
      const params = sc.parameters ?? {};
      if (sc.provisioner === "file.csi.azure.com" && params.skuName && !params.skuName.endsWith("_ZRS")) {
        report(`Azure Files StorageClass must use a ZRS skuName (got ${params.skuName}).`);
      }
      if (sc.provisioner === "filestore.csi.storage.gke.io") {
        const tier = (params.tier ?? "standard").toUpperCase();
        if (!FILESTORE_REGIONAL_TIERS.includes(tier)) {
          report(
            `Filestore StorageClass must use tier regional or enterprise (got ${params.tier ?? "default"}).`,
          );
        }
      }
    }),
  ],
};

export const filesystemPolicies: ResourceValidationPolicy[] = [filesystemEncrypted, filesystemZoneRedundant];
