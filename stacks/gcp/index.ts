/** GCP: VPC + regional GKE + Cloud SQL REGIONAL + Memorystore STANDARD_HA + Filestore REGIONAL. */
import * as pulumi from "@pulumi/pulumi";
import type { StackConfig } from "../config";
import type { Platform } from "../platform";
import { GcpCluster } from "./cluster";
import { FILESTORE_SHARE, GcpFilesystem } from "./filesystem";
import { GcpNetwork } from "./network";
import { GCP_DB_NAME, GCP_DB_USER, GcpPostgres } from "./postgres";
import { GcpRedis } from "./redis";

export { GcpCluster, GcpFilesystem, GcpNetwork, GcpPostgres, GcpRedis };

export const GCP_INTERNAL_LB_ANNOTATIONS = { "networking.gke.io/load-balancer-type": "Internal" };

export function createGcpPlatform(
  name: string,
  config: StackConfig,
  _tags: Record<string, string>,
  opts?: pulumi.ComponentResourceOptions,
): Platform {
  const project = config.gcpProject as string;
  const region = config.region;
  const net = new GcpNetwork(
    `${name}-net`,
    { cidr: config.network.cidr, region, project, existing: config.network.existing },
    opts,
  );
  const cluster = new GcpCluster(
    `${name}-cluster`,
    {
      settings: config.cluster,
      project,
      region,
      zones: config.zones,
      networkId: net.networkId,
      subnetworkId: net.subnetworkId,
    },
    opts,
  );
  const psa = { networkId: net.networkId, psaRangeName: net.psaRangeName, psaConnection: net.psaConnection };
  const db = new GcpPostgres(`${name}-pg`, { settings: config.postgres, project, region, ...psa }, opts);
  const redis = new GcpRedis(
    `${name}-redis`,
    { settings: config.redis, project, region, zones: config.zones, ...psa },
    opts,
  );
  const fs = new GcpFilesystem(
    `${name}-fs`,
    {
      settings: config.filesystem,
      project,
      region,
      zones: config.zones,
      networkName: net.networkName,
      psaRangeName: net.psaRangeName,
      psaConnection: net.psaConnection,
      clientRanges: net.clientRanges,
      k8sProvider: cluster.provider,
    },
    opts,
  );
  return {
    k8sProvider: cluster.provider,
    kubeconfig: cluster.kubeconfig,
    clusterName: cluster.clusterName,
    networkId: net.networkId,
    database: {
      host: db.host,
      port: db.port,
      user: GCP_DB_USER,
      password: db.password,
      database: GCP_DB_NAME,
      // Cloud SQL's server CA is per instance; its certificate does not name the private IP: chain only.
      sslMode: "verify-ca",
      tlsCa: db.tlsCa,
      resources: db.resources,
    },
    redis: {
      host: redis.host,
      port: redis.port,
      authToken: redis.authToken,
      tlsCa: redis.tlsCa,
      resources: [redis.instance],
    },
    storage: {
      storageClassName: fs.storageClassName,
      filesystemId: fs.instanceId,
      staticNfs: {
        server: fs.ip,
        path: `/${FILESTORE_SHARE}`,
        mountOptions: ["nfsvers=3", "hard", "noresvport"],
      },
      resources: fs.resources,
    },
    // GKE runs metrics-server itself.
    metricsApi: [],
    internalLoadBalancerAnnotations: GCP_INTERNAL_LB_ANNOTATIONS,
  };
}
