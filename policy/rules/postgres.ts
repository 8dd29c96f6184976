// PostgreSQL invariants on every cloud: highly available across zones, private, encrypted at rest and in
// transit, backed up, and protected against deletion (both by the cloud API and by Pulumi's `protect`).
import { ResourceValidationPolicy, validateResourceOfType } from "@pulumi/policy";
import * as rds from "@pulumi/aws/rds";
import * as dbforpostgresql from "@pulumi/azure-native/dbforpostgresql";
import * as sql from "@pulumi/gcp/sql";

/** Days of automated backups every database must keep unless the policy config says otherwise. */
export const DEFAULT_MIN_BACKUP_RETENTION_DAYS = 7;

/** Cloud SQL sslMode values that refuse plaintext connections. */
const CLOUD_SQL_TLS_ONLY: readonly string[] = ["ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"];

const isOff = (value: string | undefined): boolean =>
  value !== undefined && ["0", "off", "false"].includes(value.trim().toLowerCase());

export const postgresHighAvailability: ResourceValidationPolicy = {
  name: "postgres-high-availability",
  description: "PostgreSQL keeps a synchronous standby in another zone (Multi-AZ, ZoneRedundant, REGIONAL).",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(rds.Instance, (db, _args, report) => {
      if (db.multiAz !== true)
        report("RDS PostgreSQL must set multiAz: true so a standby in another AZ takes over.");
    }),
    validateResourceOfType(dbforpostgresql.Server, (db, _args, report) => {
      if (db.highAvailability?.mode !== "ZoneRedundant") {
        report("Flexible Server must set highAvailability.mode: ZoneRedundant (a standby in another zone).");
      }
    }),
    validateResourceOfType(sql.DatabaseInstance, (db, _args, report) => {
      if (db.settings?.availabilityType !== "REGIONAL") {
        report("Cloud SQL must set settings.availabilityType: REGIONAL (a standby in another zone).");
      }
    }),
  ],
};

export const postgresPrivate: ResourceValidationPolicy = {
  name: "postgres-private",
  description: "PostgreSQL has no public endpoint; it is reachable only from inside the network.",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(rds.Instance, (db, _args, report) => {
      if (db.publiclyAccessible === true) report("RDS PostgreSQL must not be publiclyAccessible.");
      if (!db.dbSubnetGroupName) {
        report(
          "RDS PostgreSQL must set dbSubnetGroupName to the private subnets (the default VPC may be public).",
        );
      }
    }),
    validateResourceOfType(dbforpostgresql.Server, (db, _args, report) => {
      const network = db.network;
      if (network?.publicNetworkAccess === "Enabled") {
        report("Flexible Server must not enable network.publicNetworkAccess.");
      } else if (!network?.delegatedSubnetResourceId && network?.publicNetworkAccess !== "Disabled") {
        report(
          "Flexible Server must use private access (network.delegatedSubnetResourceId) or set network.publicNetworkAccess: Disabled.",
        );
      }
    }),
    validateResourceOfType(sql.DatabaseInstance, (db, _args, report) => {
      const ip = db.settings?.ipConfiguration;
      // Cloud SQL turns a public IPv4 address on unless ipv4Enabled is explicitly false.
      if (ip?.ipv4Enabled !== false)
        report("Cloud SQL must set settings.ipConfiguration.ipv4Enabled: false.");
      if (!ip?.privateNetwork)
        report("Cloud SQL must set settings.ipConfiguration.privateNetwork (private IP).");
    }),
  ],
};

export const postgresEncrypted: ResourceValidationPolicy = {
  name: "postgres-encrypted",
  description:
    "PostgreSQL storage is encrypted and clients must use TLS. Azure and Cloud SQL always encrypt storage; TLS is checked on all three.",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(rds.Instance, (db, _args, report) => {
      if (db.storageEncrypted !== true) report("RDS PostgreSQL must set storageEncrypted: true.");
    }),
    // RDS PostgreSQL 15+ defaults rds.force_ssl to 1; a parameter group must not turn it off.
    validateResourceOfType(rds.ParameterGroup, (group, _args, report) => {
      const forceSsl = (group.parameters ?? []).find((p) => p.name === "rds.force_ssl");
      if (forceSsl && isOff(forceSsl.value)) report("RDS parameter group must not set rds.force_ssl to 0.");
    }),
    // Flexible Server requires TLS by default (require_secure_transport = ON); do not turn it off.
    validateResourceOfType(dbforpostgresql.Configuration, (conf, args, report) => {
      const name = (conf.configurationName ?? args.name).toLowerCase();
      if (name === "require_secure_transport" && isOff(conf.value)) {
        report("Flexible Server must keep require_secure_transport ON.");
      }
    }),
    validateResourceOfType(sql.DatabaseInstance, (db, _args, report) => {
      const sslMode = db.settings?.ipConfiguration?.sslMode;
      if (!sslMode || !CLOUD_SQL_TLS_ONLY.includes(sslMode)) {
        report(`Cloud SQL must set settings.ipConfiguration.sslMode to ${CLOUD_SQL_TLS_ONLY.join(" or ")}.`);
      }
    }),
  ],
};

interface BackupConfig {
  /** Minimum days of automated backups; default 7. */
  minRetentionDays?: number;
}

/** The configured minimum; the engine normally fills the schema default, but an unconfigured pack gets {}. */
const minRetentionDays = (config: BackupConfig): number =>
  config.minRetentionDays ?? DEFAULT_MIN_BACKUP_RETENTION_DAYS;

export const postgresBackedUp: ResourceValidationPolicy = {
  name: "postgres-backed-up",
  description:
    "PostgreSQL keeps automated backups (point-in-time recovery) for at least minRetentionDays days.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: {
      minRetentionDays: { type: "integer", minimum: 1, default: DEFAULT_MIN_BACKUP_RETENTION_DAYS },
    },
  },
  validateResource: [
    validateResourceOfType(rds.Instance, (db, args, report) => {
      const min = minRetentionDays(args.getConfig<BackupConfig>());
      // The RDS API keeps 1 day when backupRetentionPeriod is omitted.
      const days = db.backupRetentionPeriod ?? 1;
      if (days < min) {
        report(`RDS PostgreSQL keeps ${days} day(s) of backups; set backupRetentionPeriod >= ${min}.`);
      }
    }),
    validateResourceOfType(dbforpostgresql.Server, (db, args, report) => {
      const min = minRetentionDays(args.getConfig<BackupConfig>());
      // Flexible Server keeps 7 days when backup.backupRetentionDays is omitted.
      const days = db.backup?.backupRetentionDays ?? 7;
      if (days < min) {
        report(`Flexible Server keeps ${days} day(s) of backups; set backup.backupRetentionDays >= ${min}.`);
      }
    }),
    validateResourceOfType(sql.DatabaseInstance, (db, args, report) => {
      const min = minRetentionDays(args.getConfig<BackupConfig>());
      const backup = db.settings?.backupConfiguration;
      if (backup?.enabled !== true) report("Cloud SQL must set settings.backupConfiguration.enabled: true.");
      if (backup?.pointInTimeRecoveryEnabled !== true) {
        report("Cloud SQL must set settings.backupConfiguration.pointInTimeRecoveryEnabled: true.");
      }
      // Cloud SQL keeps 7 backups when backupRetentionSettings is omitted (one per day).
      const kept = backup?.backupRetentionSettings?.retainedBackups ?? 7;
      if (kept < min) {
        report(`Cloud SQL keeps ${kept} backup(s); set backupRetentionSettings.retainedBackups >= ${min}.`);
      }
    }),
  ],
};

export const postgresDeletionProtected: ResourceValidationPolicy = {
  name: "postgres-deletion-protected",
  description:
    "PostgreSQL cannot be dropped by accident: Pulumi `protect: true`, plus the cloud's own deletion protection where it has one.",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(rds.Instance, (db, args, report) => {
      if (db.deletionProtection !== true) report("RDS PostgreSQL must set deletionProtection: true.");
      if (db.skipFinalSnapshot === true) report("RDS PostgreSQL must not skipFinalSnapshot.");
      if (!args.opts.protect)
        report("RDS PostgreSQL must be created with the resource option protect: true.");
    }),
    // Flexible Server has no API-side deletion protection; Pulumi's protect is the guard.
    validateResourceOfType(dbforpostgresql.Server, (_db, args, report) => {
      if (!args.opts.protect)
        report("Flexible Server must be created with the resource option protect: true.");
    }),
    validateResourceOfType(sql.DatabaseInstance, (db, args, report) => {
      if (db.deletionProtection === false) report("Cloud SQL must not set deletionProtection: false.");
      if (db.settings?.deletionProtectionEnabled !== true) {
        report(
          "Cloud SQL must set settings.deletionProtectionEnabled: true (protection on the Google API side).",
        );
      }
      if (!args.opts.protect) report("Cloud SQL must be created with the resource option protect: true.");
    }),
  ],
};

export const postgresPolicies: ResourceValidationPolicy[] = [
  postgresHighAvailability,
  postgresPrivate,
  postgresEncrypted,
  postgresBackedUp,
  postgresDeletionProtected,
];
