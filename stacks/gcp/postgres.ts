/**
 * Cloud SQL PostgreSQL: REGIONAL (synchronous standby in another zone), private IP only over private services
 * access, TLS only, backups with point-in-time recovery, deletion protection on both sides, `protect: true`.
 */
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { PostgresSettings } from "../config";

export interface GcpPostgresArgs {
  settings: PostgresSettings;
  project: string;
  region: string;
  networkId: pulumi.Input<string>;
  psaRangeName: pulumi.Input<string>;
  /** The private services access peering; the instance waits for it. */
  psaConnection: pulumi.Resource;
}

export const GCP_DB_USER = "llmproxy";
export const GCP_DB_NAME = "llmproxy";

/** Most days of transaction logs Cloud SQL (Enterprise edition) keeps for point-in-time recovery. */
export const CLOUD_SQL_MAX_LOG_DAYS = 7;

/**
 * Backup settings: daily backups kept `days` times, PITR with up to 7 days of logs. Cloud SQL refuses a log
 * retention that is not below the number of backups kept ("backup retention should be > transaction log
 * retention"), so the logs cover one day less than the backups; `days` must be at least 2 (config validation).
 */
export function gcpBackupConfiguration(days: number) {
  return {
    enabled: true,
    pointInTimeRecoveryEnabled: true,
    startTime: "02:00",
    transactionLogRetentionDays: Math.min(days - 1, CLOUD_SQL_MAX_LOG_DAYS),
    backupRetentionSettings: { retainedBackups: days, retentionUnit: "COUNT" },
  };
}

export class GcpPostgres extends pulumi.ComponentResource {
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly password: pulumi.Output<string>;
  /** PEM of the instance's server CA(s) (more than one while Cloud SQL rotates it). */
  readonly tlsCa: pulumi.Output<string>;
  readonly instance: gcp.sql.DatabaseInstance;
  readonly resources: pulumi.Resource[];

  constructor(name: string, args: GcpPostgresArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:gcp:Postgres", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    this.instance = new gcp.sql.DatabaseInstance(
      `${name}-sql`,
      {
        project: args.project,
        region: args.region,
        databaseVersion: `POSTGRES_${s.version}`,
        deletionProtection: true,
        settings: {
          tier: s.size,
          // db-custom-* tiers need ENTERPRISE (PG16+ defaults to ENTERPRISE_PLUS, which rejects them).
          edition: "ENTERPRISE",
          availabilityType: s.ha ? "REGIONAL" : "ZONAL",
          diskType: "PD_SSD",
          diskSize: s.storageGb,
          diskAutoresize: true,
          deletionProtectionEnabled: true,
          backupConfiguration: gcpBackupConfiguration(s.backupDays),
          ipConfiguration: {
            ipv4Enabled: false,
            privateNetwork: args.networkId,
            allocatedIpRange: args.psaRangeName,
            sslMode: "ENCRYPTED_ONLY",
          },
          maintenanceWindow: { day: 7, hour: 3, updateTrack: "stable" },
          insightsConfig: { queryInsightsEnabled: true },
        },
      },
      { ...child, dependsOn: [args.psaConnection], protect: true },
    );
    const password = new random.RandomPassword(`${name}-password`, { length: 32, special: false }, child);
    const user = new gcp.sql.User(
      `${name}-user`,
      {
        project: args.project,
        instance: this.instance.name,
        name: GCP_DB_USER,
        password: pulumi.secret(password.result),
      },
      child,
    );
    const db = new gcp.sql.Database(
      `${name}-database`,
      { project: args.project, instance: this.instance.name, name: GCP_DB_NAME },
      { ...child, protect: true },
    );
    this.host = this.instance.privateIpAddress;
    this.port = pulumi.output(5432);
    this.password = pulumi.secret(password.result);
    this.tlsCa = this.instance.serverCaCerts.apply((certs) => certs.map((c) => c.cert).join("\n"));
    this.resources = [this.instance, user, db];
    this.registerOutputs({ host: this.host });
  }
}
