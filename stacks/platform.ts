/**
 * The Platform contract: what every cloud folder hands to the cloud-agnostic app component. Cloud differences
 * travel as data here (endpoints, a storage class, annotations), never as `if (cloud === …)` in app/.
 */
import type * as k8s from "@pulumi/kubernetes";
import type * as pulumi from "@pulumi/pulumi";

export interface PlatformDatabase {
  /** Private host name or IP of the PostgreSQL server. */
  host: pulumi.Output<string>;
  port: pulumi.Output<number>;
  /** Login name. */
  user: pulumi.Input<string>;
  /** Generated password, secret. */
  password: pulumi.Output<string>;
  /** Database name. */
  database: pulumi.Input<string>;
  /**
   * How the proxy checks the server's certificate (libpq `sslmode`): `verify-full` (chain and host name) where the
   * certificate names the host it is reached by, `verify-ca` (chain only) where it cannot (Cloud SQL on a private
   * IP), `require` (encrypted, unverified) only where no CA is known.
   */
  sslMode: "verify-full" | "verify-ca" | "require";
  /** PEM of the server CA when it is not publicly trusted (RDS, Cloud SQL); becomes DATABASE_CA. */
  tlsCa?: pulumi.Output<string>;
  /** The resource(s) the proxy must wait for (server, database, TLS parameter). */
  resources: pulumi.Resource[];
}

export interface PlatformRedis {
  /** Private host name or IP of the Redis primary endpoint. */
  host: pulumi.Output<string>;
  /** TLS port. */
  port: pulumi.Output<number>;
  /** AUTH token / access key, secret. */
  authToken: pulumi.Output<string>;
  /** PEM of the server CA when it is not publicly trusted (Memorystore); becomes REDIS_TLS_CA. */
  tlsCa?: pulumi.Output<string>;
  resources: pulumi.Resource[];
}

/** A pre-created NFS export bound through static PersistentVolumes (one per claim, mounted with subPaths). */
export interface StaticNfsVolume {
  server: pulumi.Output<string>;
  path: pulumi.Input<string>;
  mountOptions?: string[];
}

export interface PlatformStorage {
  /** ReadWriteMany StorageClass the app's claims use (created by the program). */
  storageClassName: pulumi.Output<string>;
  /** Set when claims bind to static PVs on a pre-created export instead of being provisioned dynamically. */
  staticNfs?: StaticNfsVolume;
  /** EFS id / storage account id / Filestore instance id. */
  filesystemId: pulumi.Output<string>;
  resources: pulumi.Resource[];
}

export interface Platform {
  /** Provider for every Kubernetes object of the app. */
  k8sProvider: k8s.Provider;
  /** Kubeconfig of the cluster, secret. */
  kubeconfig: pulumi.Output<string>;
  clusterName: pulumi.Output<string>;
  /** VPC / VNet / network id. */
  networkId: pulumi.Output<string>;
  database: PlatformDatabase;
  redis: PlatformRedis;
  storage: PlatformStorage;
  /**
   * What the HorizontalPodAutoscaler waits for: the resource metrics API (metrics-server) where the platform installs
   * it (EKS ships none); empty where the cluster ships one (AKS, GKE) or is an existing cluster.
   */
  metricsApi: pulumi.Resource[];
  /** Annotations that make a LoadBalancer Service internal on this cloud. */
  internalLoadBalancerAnnotations: Record<string, string>;
}
