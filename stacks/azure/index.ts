/** Azure: VNet + AKS + PostgreSQL Flexible Server (ZoneRedundant) + Managed Redis + Azure Files NFS. */
import * as pulumi from "@pulumi/pulumi";
import type { StackConfig } from "../config";
import type { Platform } from "../platform";
import { AzureCluster } from "./cluster";
import { AzureFilesystem } from "./filesystem";
import { AzureNetwork } from "./network";
import { AZURE_DB_NAME, AZURE_DB_USER, AzurePostgres } from "./postgres";
import { AzureRedis } from "./redis";

export { AzureCluster, AzureFilesystem, AzureNetwork, AzurePostgres, AzureRedis };

export const AZURE_INTERNAL_LB_ANNOTATIONS = {
  "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
};

export function createAzurePlatform(
  name: string,
  config: StackConfig,
  tags: Record<string, string>,
  opts?: pulumi.ComponentResourceOptions,
): Platform {
  const location = config.region;
  const net = new AzureNetwork(
    `${name}-net`,
    { cidr: config.network.cidr, location, existing: config.network.existing, tags },
    opts,
  );
  const cluster = new AzureCluster(
    `${name}-cluster`,
    {
      settings: config.cluster,
      resourceGroupName: net.resourceGroupName,
      location,
      zones: config.zones,
      subnetId: net.clusterSubnetId,
      tags,
    },
    opts,
  );
  const db = new AzurePostgres(
    `${name}-pg`,
    {
      settings: config.postgres,
      resourceGroupName: net.resourceGroupName,
      location,
      zones: config.zones,
      vnetId: net.vnetId,
      delegatedSubnetId: net.postgresSubnetId,
      tags,
    },
    opts,
  );
  const redis = new AzureRedis(
    `${name}-redis`,
    {
      settings: config.redis,
      resourceGroupName: net.resourceGroupName,
      location,
      vnetId: net.vnetId,
      endpointSubnetId: net.endpointSubnetId,
      tags,
    },
    opts,
  );
  const fs = new AzureFilesystem(
    `${name}-fs`,
    {
      settings: config.filesystem,
      resourceGroupName: net.resourceGroupName,
      location,
      clusterSubnetId: net.clusterSubnetId,
      k8sProvider: cluster.provider,
      tags,
    },
    opts,
  );
  return {
    k8sProvider: cluster.provider,
    kubeconfig: cluster.kubeconfig,
    clusterName: cluster.clusterName,
    networkId: net.vnetId,
    database: {
      host: db.host,
      port: db.port,
      user: AZURE_DB_USER,
      password: db.password,
      database: AZURE_DB_NAME,
      // The server's certificate chains to a public root (DigiCert Global Root G2 / Microsoft RSA Root CA 2017)
      // and names <server>.postgres.database.azure.com, the host the proxy connects to.
      sslMode: "verify-full",
      resources: db.resources,
    },
    redis: { host: redis.host, port: redis.port, authToken: redis.authToken, resources: redis.resources },
    storage: {
      storageClassName: fs.storageClassName,
      filesystemId: fs.accountId,
      staticNfs: fs.nfs,
      resources: fs.resources,
    },
    // AKS runs metrics-server itself.
    metricsApi: [],
    internalLoadBalancerAnnotations: AZURE_INTERNAL_LB_ANNOTATIONS,
  };
}
