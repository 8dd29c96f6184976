/** RDS PostgreSQL Multi-AZ: private, encrypted, TLS enforced, backups kept, deletion-protected and `protect`ed. */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { RDS_MAX_STORAGE_GB, type PostgresSettings } from "../config";
import { clientSecurityGroup, type AwsClients } from "./security";
import { RDS_CA_IDENTIFIER } from "./rds-ca";

export interface AwsPostgresArgs {
  settings: PostgresSettings;
  vpcId: pulumi.Input<string>;
  /** Private subnets in >= 2 AZs. */
  subnetIds: pulumi.Input<string>[];
  clients: AwsClients;
  tags: Record<string, string>;
}

export const AWS_DB_USER = "llmproxy";
export const AWS_DB_NAME = "llmproxy";

/** Storage autoscaling ceiling: four times the initial size, capped at the largest RDS volume (64 TiB). */
export function rdsMaxAllocatedStorage(storageGb: number): number {
  return Math.min(storageGb * 4, RDS_MAX_STORAGE_GB);
}

export class AwsPostgres extends pulumi.ComponentResource {
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly password: pulumi.Output<string>;
  readonly instance: aws.rds.Instance;

  constructor(name: string, args: AwsPostgresArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:aws:Postgres", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    // Placement and access: private subnets, port 5432 from the cluster only.
    const subnets = new aws.rds.SubnetGroup(
      `${name}-subnets`,
      { subnetIds: args.subnetIds, description: `${name} private subnets`, tags: args.tags },
      child,
    );
    const sg = clientSecurityGroup(
      `${name}-sg`,
      {
        vpcId: args.vpcId,
        port: 5432,
        clients: args.clients,
        description: "PostgreSQL from the cluster",
        tags: args.tags,
      },
      child,
    );

    // TLS required for every connection.
    const params = new aws.rds.ParameterGroup(
      `${name}-params`,
      {
        family: `postgres${s.version}`,
        description: `${name}: TLS required`,
        parameters: [{ name: "rds.force_ssl", value: "1" }],
        tags: args.tags,
      },
      child,
    );

    // Generated once, kept secret in state.
    const password = new random.RandomPassword(`${name}-password`, { length: 32, special: false }, child);

    this.instance = new aws.rds.Instance(
      `${name}-db`,
      {
        engine: aws.rds.EngineType.Postgres,
        engineVersion: s.version,
        instanceClass: s.size,
        allocatedStorage: s.storageGb,
        maxAllocatedStorage: rdsMaxAllocatedStorage(s.storageGb),
        storageType: aws.rds.StorageType.GP3,
        multiAz: s.ha,
        storageEncrypted: true,
        publiclyAccessible: false,
        dbSubnetGroupName: subnets.name,
        vpcSecurityGroupIds: [sg.id],
        parameterGroupName: params.name,
        username: AWS_DB_USER,
        password: pulumi.secret(password.result),
        dbName: AWS_DB_NAME,
        backupRetentionPeriod: s.backupDays,
        backupWindow: "02:00-03:00",
        maintenanceWindow: "sun:03:30-sun:04:30",
        deletionProtection: true,
        skipFinalSnapshot: false,
        finalSnapshotIdentifier: `${name}-final`,
        copyTagsToSnapshot: true,
        autoMinorVersionUpgrade: true,
        performanceInsightsEnabled: true,
        caCertIdentifier: RDS_CA_IDENTIFIER,
        tags: args.tags,
      },
      { ...child, protect: true },
    );
    this.host = this.instance.address;
    this.port = this.instance.port;
    this.password = pulumi.secret(password.result);
    this.registerOutputs({ host: this.host, port: this.port });
  }
}
