/** ElastiCache Redis replication group: >= 2 nodes across AZs, automatic failover, TLS, AUTH, at-rest encryption. */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { RedisSettings } from "../config";
import { clientSecurityGroup, type AwsClients } from "./security";

export interface AwsRedisArgs {
  settings: RedisSettings;
  vpcId: pulumi.Input<string>;
  subnetIds: pulumi.Input<string>[];
  /**
   * AZs to place the nodes in (primary first), each with a subnet in `subnetIds`. Empty: ElastiCache picks among
   * the subnet group's AZs (an existing VPC whose subnets' AZs the program does not know).
   */
  zones: string[];
  clients: AwsClients;
  tags: Record<string, string>;
}

/** Node count: one per AZ (2-3) with HA, a single node without. */
export function awsRedisNodeCount(ha: boolean, zoneCount: number): number {
  return ha ? Math.min(Math.max(zoneCount, 2), 3) : 1;
}

export const AWS_REDIS_PORT = 6379;

export class AwsRedis extends pulumi.ComponentResource {
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly authToken: pulumi.Output<string>;
  readonly group: aws.elasticache.ReplicationGroup;

  constructor(name: string, args: AwsRedisArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:aws:Redis", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;
    // One node per AZ: the named zones, else one per subnet (the subnets are one per AZ).
    const nodes = awsRedisNodeCount(s.ha, args.zones.length || args.subnetIds.length);

    const subnets = new aws.elasticache.SubnetGroup(
      `${name}-subnets`,
      { subnetIds: args.subnetIds, description: `${name} private subnets`, tags: args.tags },
      child,
    );
    const sg = clientSecurityGroup(
      `${name}-sg`,
      {
        vpcId: args.vpcId,
        port: AWS_REDIS_PORT,
        clients: args.clients,
        description: "Redis from the cluster",
        tags: args.tags,
      },
      child,
    );
    // ElastiCache AUTH tokens allow printable characters except @, " and /: alphanumerics are safe everywhere.
    const token = new random.RandomPassword(`${name}-auth`, { length: 64, special: false }, child);

    this.group = new aws.elasticache.ReplicationGroup(
      `${name}-rg`,
      {
        description: `${name} rate limits and response cache`,
        engine: "redis",
        engineVersion: "7.1",
        nodeType: s.size,
        numCacheClusters: nodes,
        automaticFailoverEnabled: s.ha,
        multiAzEnabled: s.ha,
        preferredCacheClusterAzs: args.zones.length >= nodes ? args.zones.slice(0, nodes) : undefined,
        transitEncryptionEnabled: true,
        atRestEncryptionEnabled: true,
        authToken: pulumi.secret(token.result),
        port: AWS_REDIS_PORT,
        subnetGroupName: subnets.name,
        securityGroupIds: [sg.id],
        snapshotRetentionLimit: 7,
        autoMinorVersionUpgrade: true,
        tags: args.tags,
      },
      child,
    );
    this.host = this.group.primaryEndpointAddress;
    this.port = this.group.port.apply((p) => p ?? AWS_REDIS_PORT);
    this.authToken = pulumi.secret(token.result);
    this.registerOutputs({ host: this.host, port: this.port });
  }
}
