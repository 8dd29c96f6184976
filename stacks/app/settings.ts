/**
 * Settings of the cloud-agnostic app component that come from stack config. Kept in a type-only module so
 * `config.ts` can build them without importing the component (and the component never reads config).
 */

/** pino levels accepted by the service's `LOG_LEVEL`. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** What the proxy does when Redis is unreachable (`RATE_LIMIT_FAILURE_MODE`). */
export const RATE_LIMIT_FAILURE_MODES = ["fail-open", "fail-closed"] as const;
export type RateLimitFailureMode = (typeof RATE_LIMIT_FAILURE_MODES)[number];

/** Kubernetes Service types the program supports for the proxy. */
export const SERVICE_TYPES = ["ClusterIP", "LoadBalancer"] as const;
export type ServiceType = (typeof SERVICE_TYPES)[number];

/** A YAML/JSON value. */
export type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

/** The PodDisruptionBudget either keeps `minAvailable` pods or allows `maxUnavailable` to be evicted. */
export type PdbPolicy = { minAvailable: number } | { maxUnavailable: number };

export interface AutoscalingSettings {
  /** Whether a HorizontalPodAutoscaler manages the replica count. Default true. */
  enabled: boolean;
  /** Lower bound of the HPA (and the initial Deployment replicas). Default 3. */
  minReplicas: number;
  /** Upper bound of the HPA. Default 12. */
  maxReplicas: number;
  /** Average CPU utilisation target, percent of the request (1-100). Default 70. */
  cpuTargetPercent: number;
  /** Scale-down stabilisation window, seconds. Default 300. */
  scaleDownStabilizationSeconds: number;
}

export interface ProxySettings {
  /** Namespace the proxy runs in. Default "llm-proxy". */
  namespace: string;
  /** Proxy container image (pin a tag or digest). */
  image: string;
  /** Replicas when autoscaling is disabled. Default 3. */
  replicas: number;
  autoscaling: AutoscalingSettings;
  pdb: PdbPolicy;
  /** node:cluster workers per pod (`WORKERS`). Default 2. */
  workers: number;
  /** CPU request per pod, millicores. Default 1000. */
  cpuRequestMillicores: number;
  /** CPU limit per pod, millicores; 0 = no limit (avoids CFS throttling of streams). Default 0. */
  cpuLimitMillicores: number;
  /** Memory request per pod, MiB. Default 512. */
  memoryRequestMi: number;
  /** Memory limit per pod, MiB. Default 768. */
  memoryLimitMi: number;
  /** Longest request/stream the proxy serves, seconds; drives shutdown grace and the pod's grace period. Default 300. */
  requestTimeoutSeconds: number;
  /** Delay before SIGTERM so endpoints are removed from load balancers first, seconds. Default 10. */
  preStopDelaySeconds: number;
  logLevel: LogLevel;
  cacheEnabled: boolean;
  /** Response cache TTL, seconds. Default 300. */
  cacheTtlSeconds: number;
  /** Usage rows older than this many days are deleted; 0 = not set by the stack (USAGE_RETENTION_DAYS left out). */
  usageRetentionDays: number;
  rateLimitFailureMode: RateLimitFailureMode;
  /** Deploy the Chroma server for RAG. Default true. */
  chromaEnabled: boolean;
  /** Chroma server image, pinned. */
  chromaImage: string;
  /** Size requested by the knowledge-base claim, GiB. Default 10. */
  kbStorageGi: number;
  /** Size requested by the Chroma data claim, GiB. Default 20. */
  chromaStorageGi: number;
  serviceType: ServiceType;
  /** `trustedProxyHops`: proxies in front that append to X-Forwarded-For (the service's TRUSTED_PROXY_HOPS). */
  ingress?: { host: string; trustedProxyHops: number; className?: string; tlsSecretName?: string };
  /**
   * `proxyConfig`, parsed: a mapping merged over the generated proxy config file (models by name, other keys
   * deeply). Default {}. May hold secrets: the file is kept in a Kubernetes Secret.
   */
  proxyConfig: { [k: string]: Json };
}
