/**
 * Stack configuration: read once, validated, typed. `CONFIG_KEYS` is the single place where every project key,
 * its type and its default live; Pulumi.yaml declares the same keys and defaults (a test keeps them equal),
 * because the Pulumi SDK does not read Pulumi.yaml defaults itself — the CLI merges them, tests do not.
 */
import * as pulumi from "@pulumi/pulumi";
import { ConfigError, ENV_RANGES, loadConfig } from "../service/config";
import { MAX_NAMESPACE_LENGTH, parseProxyConfig, proxyConfigYaml, proxyPlainEnv } from "./app/decisions";
import { canonicalCidr, cidrsOverlap, isIpv4Cidr } from "./cidr";
import {
  LOG_LEVELS,
  RATE_LIMIT_FAILURE_MODES,
  SERVICE_TYPES,
  type LogLevel,
  type PdbPolicy,
  type ProxySettings,
  type RateLimitFailureMode,
  type ServiceType,
  type Json,
} from "./app/settings";

export const PROJECT = "llm-proxy";

export const CLOUDS = ["aws", "azure", "gcp"] as const;
export type Cloud = (typeof CLOUDS)[number];

export type ConfigKeyType = "string" | "integer" | "boolean" | "array";
export type ConfigValue = string | number | boolean | string[];

export interface ConfigKeySpec {
  type: ConfigKeyType;
  description: string;
  /** Absent for keys that must be set per stack (`cloud`) or are optional secrets. */
  default?: ConfigValue;
  secret?: boolean;
}

/** Every project config key (`llm-proxy:<key>`). Order is the order of Pulumi.yaml and the README config reference. */
export const CONFIG_KEYS = {
  cloud: { type: "string", description: "Target cloud: aws, azure or gcp. Set in each stack file." },
  allowNonHa: {
    type: "boolean",
    default: false,
    description:
      "Allow single-zone / non-HA settings (one zone, non-HA Postgres or Redis, zonal filesystem, fewer than 2 replicas or nodes). For dev stacks only.",
  },
  zones: {
    type: "array",
    default: [],
    description:
      "Zones to spread nodes and data across; zonal filesystem tiers use the first. Empty = the cloud default (AWS <region>a,b,c, or with existingNetworkId the AZs of the subnets, chosen by the services; Azure 1,2,3; GCP: the region's zones chosen by GKE).",
  },
  networkCidr: {
    type: "string",
    default: "10.40.0.0/16",
    description:
      "Address space of the network the program creates (or of the existing one, used for firewall rules).",
  },
  existingNetworkId: {
    type: "string",
    default: "",
    description:
      "Use an existing network instead of creating one: AWS VPC id, Azure VNet resource id, GCP network self link. Empty = create.",
  },
  existingSubnetIds: {
    type: "array",
    default: [],
    description:
      "With existingNetworkId: AWS private subnet ids, exactly one per AZ, in >= 2 AZs (if zones is set, it lists their AZs in the same order); Azure [clusterSubnetId, postgresDelegatedSubnetId, privateEndpointSubnetId], where the cluster subnet must have a Microsoft.Storage service endpoint (the NFS storage account admits only that subnet, by a virtual network rule; the program adds the endpoint only to subnets it creates); GCP [subnetworkSelfLink] (with secondary ranges 'pods' and 'services').",
  },
  existingKubeconfig: {
    type: "string",
    secret: true,
    description:
      "Kubeconfig of an existing cluster (set with --secret). When set, no cluster is created; the cluster must run the cloud's RWX CSI driver and, for the HPA, metrics-server (EKS ships none: add its metrics-server add-on).",
  },
  kubernetesVersion: {
    type: "string",
    default: "1.33",
    description: "Kubernetes minor version of the created cluster.",
  },
  nodeSize: {
    type: "string",
    default: "",
    description:
      "Node instance type / VM size / machine type. Empty = cloud default (m6i.xlarge, Standard_D4ds_v5, e2-standard-4).",
  },
  nodeMinCount: {
    type: "integer",
    default: 3,
    description:
      "Minimum node count (AWS/Azure: whole cluster, on AWS split evenly over the node groups, one per AZ; GCP: per zone). AWS: raise each node group's desired size to at least its new share before raising it (see README).",
  },
  nodeMaxCount: {
    type: "integer",
    default: 9,
    description:
      "Maximum node count of the cluster autoscaler (same unit as nodeMinCount): AKS and GKE autoscaling, Cluster Autoscaler on EKS.",
  },
  apiAllowedCidrs: {
    type: "array",
    default: [],
    description:
      "CIDRs allowed to reach the created cluster's public Kubernetes API endpoint: where pulumi and kubectl run (office, VPN, CI egress). Required when the program creates the cluster; 0.0.0.0/0 needs allowNonHa.",
  },
  postgresVersion: { type: "string", default: "16", description: "PostgreSQL major version." },
  postgresSize: {
    type: "string",
    default: "",
    description:
      "Database instance class / SKU / tier. Empty = cloud default (db.m6g.large, Standard_D2ds_v5, db-custom-2-7680). Azure: Standard_B* (Burstable, no HA), Standard_D* (GeneralPurpose) or Standard_E* (MemoryOptimized).",
  },
  postgresStorageGb: {
    type: "integer",
    default: 0,
    description:
      "Initial database storage, GB (grows automatically). 0 = cloud default (AWS 100, Azure 128, GCP 100). AWS at least 20; Azure one of 32, 64, 128, 256, 512, 1024, 2048, 4095, 4096, 8192, 16384, 32767.",
  },
  postgresBackupDays: {
    type: "integer",
    default: 14,
    description: "Days automated backups are kept (1-35; Azure 7-35; GCP 2-35).",
  },
  postgresHa: {
    type: "boolean",
    default: true,
    description: "Zone-redundant PostgreSQL (Multi-AZ / ZoneRedundant / REGIONAL). false needs allowNonHa.",
  },
  redisSize: {
    type: "string",
    default: "",
    description:
      "Redis node type / SKU. Empty = cloud default (cache.r7g.large, Balanced_B5; GCP uses redisMemoryGb).",
  },
  redisMemoryGb: { type: "integer", default: 5, description: "Memorystore capacity, GB (GCP only)." },
  redisHa: {
    type: "boolean",
    default: true,
    description: "Replicated Redis with automatic failover across zones. false needs allowNonHa.",
  },
  filesystemTier: {
    type: "string",
    default: "",
    description:
      "RWX filesystem tier. Empty = cloud default (AWS EFS Regional; Azure Premium_ZRS; GCP REGIONAL). Zonal tiers (AWS OneZone, Azure Premium_LRS, GCP ZONAL, BASIC_HDD, BASIC_SSD) need allowNonHa and live in the first zone.",
  },
  filesystemSizeGb: {
    type: "integer",
    default: 1024,
    description:
      "Filesystem capacity, GB: GCP Filestore (at least 1024; BASIC_SSD 2560), Azure NFS share quota (at least 100). EFS is elastic and ignores it.",
  },
  namespace: { type: "string", default: "llm-proxy", description: "Kubernetes namespace of the proxy." },
  image: {
    type: "string",
    default: "ghcr.io/llm-proxy/llm-proxy:0.1.0",
    description: "Proxy container image (pin a tag or a digest).",
  },
  replicas: { type: "integer", default: 3, description: "Proxy replicas when autoscaling is disabled." },
  autoscalingEnabled: {
    type: "boolean",
    default: true,
    description: "Scale the proxy with a HorizontalPodAutoscaler.",
  },
  minReplicas: {
    type: "integer",
    default: 3,
    description: "HPA minimum replicas (also the initial replica count).",
  },
  maxReplicas: { type: "integer", default: 12, description: "HPA maximum replicas." },
  cpuTargetPercent: {
    type: "integer",
    default: 70,
    description: "HPA average CPU utilisation target, percent of the request (1-100).",
  },
  scaleDownStabilizationSeconds: {
    type: "integer",
    default: 300,
    description: "HPA scale-down stabilisation window, seconds.",
  },
  pdbMinAvailable: {
    type: "integer",
    default: 2,
    description:
      "PodDisruptionBudget minAvailable; must be below the minimum replicas so node drains can proceed.",
  },
  pdbMaxUnavailable: {
    type: "integer",
    default: 0,
    description: "When > 0 the PodDisruptionBudget uses maxUnavailable instead of minAvailable.",
  },
  workers: { type: "integer", default: 2, description: "node:cluster worker processes per pod (WORKERS)." },
  cpuRequestMillicores: {
    type: "integer",
    default: 1000,
    description: "CPU request per proxy pod, millicores.",
  },
  cpuLimitMillicores: {
    type: "integer",
    default: 0,
    description: "CPU limit per proxy pod, millicores; 0 = no limit (no CFS throttling of streams).",
  },
  memoryRequestMi: {
    type: "integer",
    default: 512,
    description: "Memory request per proxy pod, MiB; at least 60 + 150 x workers.",
  },
  memoryLimitMi: {
    type: "integer",
    default: 768,
    description: "Memory limit per proxy pod, MiB (>= request).",
  },
  requestTimeoutSeconds: {
    type: "integer",
    default: 300,
    description:
      "Longest request or stream, seconds; sets the shutdown grace and terminationGracePeriodSeconds.",
  },
  preStopDelaySeconds: {
    type: "integer",
    default: 10,
    description: "Seconds a terminating pod keeps serving so load balancers drop it first.",
  },
  logLevel: {
    type: "string",
    default: "info",
    description: "Proxy log level (fatal, error, warn, info, debug, trace).",
  },
  cacheEnabled: { type: "boolean", default: false, description: "Response cache on/off (CACHE_ENABLED)." },
  cacheTtlSeconds: { type: "integer", default: 300, description: "Response cache TTL, seconds." },
  usageRetentionDays: {
    type: "integer",
    default: 0,
    description:
      "Delete usage rows older than this many days (USAGE_RETENTION_DAYS); 0 = not set here (keep forever, unless proxyConfig sets usage.retention_days).",
  },
  rateLimitFailureMode: {
    type: "string",
    default: "fail-open",
    description: "Rate limiting when Redis is unreachable: fail-open or fail-closed.",
  },
  chromaEnabled: { type: "boolean", default: true, description: "Deploy the Chroma server used by RAG." },
  chromaImage: {
    type: "string",
    default: "chromadb/chroma:1.0.20",
    description: "Chroma server image (pinned).",
  },
  kbStorageGi: { type: "integer", default: 10, description: "Knowledge-base claim size, GiB." },
  chromaStorageGi: { type: "integer", default: 20, description: "Chroma data claim size, GiB." },
  serviceType: {
    type: "string",
    default: "ClusterIP",
    description: "Proxy Service type: ClusterIP, or LoadBalancer (always an internal load balancer).",
  },
  ingressHost: {
    type: "string",
    default: "",
    description: "Host name of an Ingress for the proxy. Empty = no Ingress.",
  },
  trustedProxyHops: {
    type: "integer",
    default: 1,
    description:
      "Proxies in front of the pods that append to X-Forwarded-For, with ingressHost (TRUSTED_PROXY_HOPS; the audit log's client address): 1 for ingress-nginx, 2 for GKE's GCE ingress (client, load balancer); 0 = ignore the header.",
  },
  ingressClassName: {
    type: "string",
    default: "",
    description: "IngressClass of the Ingress (empty = cluster default).",
  },
  ingressTlsSecret: {
    type: "string",
    default: "",
    description: "TLS Secret of the Ingress (empty = no TLS section).",
  },
  proxyConfig: {
    type: "string",
    default: "",
    description: "YAML merged over the generated proxy config file (providers, models, limits, PII, RAG).",
  },
  openaiApiKey: {
    type: "string",
    secret: true,
    description: "OpenAI API key (OPENAI_API_KEY); set with --secret.",
  },
  anthropicApiKey: {
    type: "string",
    secret: true,
    description: "Anthropic API key (ANTHROPIC_API_KEY); set with --secret.",
  },
  azureOpenaiApiKey: {
    type: "string",
    secret: true,
    description: "Azure OpenAI API key (AZURE_OPENAI_API_KEY); set with --secret.",
  },
} as const satisfies Record<string, ConfigKeySpec>;

export type ConfigKey = keyof typeof CONFIG_KEYS;

/** Secret config keys and the environment variable each one becomes in the proxy's Secret. */
export const PROVIDER_KEY_ENV = {
  openaiApiKey: "OPENAI_API_KEY",
  anthropicApiKey: "ANTHROPIC_API_KEY",
  azureOpenaiApiKey: "AZURE_OPENAI_API_KEY",
} as const satisfies Partial<Record<ConfigKey, string>>;

/** Provider settings each cloud needs (namespaced outside the project): where the region and project live. */
export const PROVIDER_SETTINGS: Record<Cloud, { region: string; project?: string }> = {
  aws: { region: "aws:region" },
  azure: { region: "azure-native:location" },
  gcp: { region: "gcp:region", project: "gcp:project" },
};

/** Sizes used when a size key is left empty; production-grade, zone-redundant choices. */
export interface CloudDefaults {
  nodeSize: string;
  postgresSize: string;
  redisSize: string;
  filesystemTier: string;
  /** Used when postgresStorageGb is 0. */
  postgresStorageGb: number;
}

export const CLOUD_DEFAULTS: Record<Cloud, CloudDefaults> = {
  aws: {
    nodeSize: "m6i.xlarge",
    postgresSize: "db.m6g.large",
    redisSize: "cache.r7g.large",
    filesystemTier: "Regional",
    postgresStorageGb: 100,
  },
  azure: {
    nodeSize: "Standard_D4ds_v5",
    postgresSize: "Standard_D2ds_v5",
    redisSize: "Balanced_B5",
    filesystemTier: "Premium_ZRS",
    postgresStorageGb: 128,
  },
  gcp: {
    nodeSize: "e2-standard-4",
    postgresSize: "db-custom-2-7680",
    redisSize: "",
    filesystemTier: "REGIONAL",
    postgresStorageGb: 100,
  },
};

/** Filesystem tiers that survive the loss of a zone, per cloud. */
export const HA_FILESYSTEM_TIERS: Record<Cloud, readonly string[]> = {
  aws: ["Regional"],
  azure: ["Premium_ZRS"],
  gcp: ["REGIONAL", "ENTERPRISE"],
};
export const FILESYSTEM_TIERS: Record<Cloud, readonly string[]> = {
  aws: ["Regional", "OneZone"],
  azure: ["Premium_ZRS", "Premium_LRS"],
  gcp: ["REGIONAL", "ENTERPRISE", "ZONAL", "BASIC_SSD", "BASIC_HDD"],
};

/**
 * Smallest capacity each Filestore tier accepts, GiB (the provider's examples and the Filestore tier table:
 * BASIC_SSD starts at 2.5 TiB, every other tier at 1 TiB).
 */
export const FILESTORE_MIN_CAPACITY_GB: Record<string, number> = {
  REGIONAL: 1024,
  ENTERPRISE: 1024,
  ZONAL: 1024,
  BASIC_HDD: 1024,
  BASIC_SSD: 2560,
};

/** Smallest and largest Premium (NFS) Azure file share quota, GiB (`FileShare.shareQuota` doc comment). */
export const AZURE_SHARE_MIN_GB = 100;
export const AZURE_SHARE_MAX_GB = 102_400;

/** Smallest gp3 RDS PostgreSQL allocation, GB. */
export const RDS_MIN_STORAGE_GB = 20;
/** Largest RDS PostgreSQL volume (gp3: 20-65536 GiB, CreateDBInstance AllocatedStorage); also the autoscaling ceiling. */
export const RDS_MAX_STORAGE_GB = 65_536;

/** Backup retention Azure Database for PostgreSQL Flexible Server accepts, days (default 7, at most 35). */
export const AZURE_POSTGRES_BACKUP_DAYS = { min: 7, max: 35 } as const;

/**
 * Fewest backups Cloud SQL keeps with point-in-time recovery: it needs at least 1 day of transaction logs and
 * more backups than days of logs (stacks/gcp/postgres.ts keeps one day less of logs than backups).
 */
export const GCP_POSTGRES_MIN_BACKUP_DAYS = 2;

/** Most zones the AWS network plan lays out (one private and one public subnet each, stacks/aws/network.ts). */
export const AWS_MAX_ZONES = 6;
/** Azure availability zones are numbered 1-3 in every zonal region. */
export const AZURE_ZONES = ["1", "2", "3"] as const;

/**
 * Address ranges the program fixes inside the clusters it creates (stacks/azure/cluster.ts, stacks/gcp/cluster.ts);
 * the network must not overlap them. AKS (Azure CNI overlay): pods and Kubernetes services; GKE: the private
 * control plane's /28.
 */
export const AKS_POD_CIDR = "192.168.0.0/16";
export const AKS_SERVICE_CIDR = "172.16.0.0/16";
export const AKS_DNS_SERVICE_IP = "172.16.0.10";
export const GKE_MASTER_CIDR = "172.16.0.32/28";

/** Largest Memorystore for Redis instance, GB (the M5 capacity tier tops out at 300 GB). */
export const MEMORYSTORE_MAX_GB = 300;
/** Cloud SQL storage capacity, GB: 10 GB to 64 TB. */
export const CLOUD_SQL_STORAGE_GB = { min: 10, max: 65_536 } as const;
/**
 * Largest capacity each Filestore tier accepts, GiB (the Filestore tier table: zonal and regional up to 100 TiB,
 * enterprise 10 TiB, basic 63.9 TiB).
 */
export const FILESTORE_MAX_CAPACITY_GB: Record<string, number> = {
  REGIONAL: 102_400,
  ZONAL: 102_400,
  ENTERPRISE: 10_240,
  BASIC_HDD: 65_433,
  BASIC_SSD: 65_433,
};

/** What existingNetworkId names on each cloud. */
const NETWORK_ID_KIND: Record<Cloud, string> = {
  aws: "the cluster's VPC id",
  azure: "the cluster's VNet resource id",
  gcp: "the cluster's network self link",
};

/** Longest HPA stabilization window Kubernetes accepts, seconds. */
export const HPA_MAX_STABILIZATION_SECONDS = 3600;

/**
 * The ranges service/config.ts accepts (its ENV_RANGES) for the environment variables the stack sets, with the keys
 * each comes from. The service refuses to start outside them (the pods crash-loop after a successful `pulumi up`),
 * so the stack refuses first; test/stacks/contract.test.ts probes loadConfig at both ends of every range.
 */
const ENV_KEYS = {
  WORKERS: ["workers"],
  CACHE_TTL_SECONDS: ["cacheTtlSeconds"],
  SHUTDOWN_GRACE_SECONDS: ["requestTimeoutSeconds"],
  REPLICAS: ["replicas", "maxReplicas"],
  USAGE_RETENTION_DAYS: ["usageRetentionDays"],
  TRUSTED_PROXY_HOPS: ["trustedProxyHops"],
} as const satisfies Record<keyof typeof ENV_RANGES, readonly ConfigKey[]>;

export const SERVICE_ENV_RANGES = Object.fromEntries(
  Object.entries(ENV_KEYS).map(([env, keys]) => [env, { keys, ...ENV_RANGES[env as keyof typeof ENV_KEYS] }]),
) as { [E in keyof typeof ENV_KEYS]: { keys: (typeof ENV_KEYS)[E]; min: number; max: number } };

/** The config key behind each plain environment variable the stack sets from config. */
const ENV_CONFIG_KEY: Partial<Record<string, ConfigKey>> = {
  WORKERS: "workers",
  CACHE_TTL_SECONDS: "cacheTtlSeconds",
  CACHE_ENABLED: "cacheEnabled",
  SHUTDOWN_GRACE_SECONDS: "requestTimeoutSeconds",
  REPLICAS: "maxReplicas",
  USAGE_RETENTION_DAYS: "usageRetentionDays",
  LOG_LEVEL: "logLevel",
  RATE_LIMIT_FAILURE_MODE: "rateLimitFailureMode",
  TRUSTED_PROXY_HOPS: "trustedProxyHops",
};

/**
 * Storage sizes Azure Database for PostgreSQL Flexible Server accepts (Premium SSD), GiB; the API rejects any other
 * value. From the provider's `storage_mb` list (32768 … 33553408 MiB).
 */
export const AZURE_POSTGRES_STORAGE_GB = [
  32, 64, 128, 256, 512, 1024, 2048, 4095, 4096, 8192, 16384, 32767,
] as const;

/** Flexible Server compute tiers; the SKU name decides which one a server is. */
export type AzurePostgresTier = "Burstable" | "GeneralPurpose" | "MemoryOptimized";

/**
 * The tier of a Flexible Server SKU name (`Standard_B2ms` → Burstable, `Standard_D4ds_v5` → GeneralPurpose,
 * `Standard_E4ds_v5` → MemoryOptimized); undefined for a name that is none of them. The API rejects a tier that
 * does not match the name.
 */
export function azurePostgresTier(sku: string): AzurePostgresTier | undefined {
  const m = /^Standard_([BDE])\d/.exec(sku);
  if (!m) return undefined;
  return ({ B: "Burstable", D: "GeneralPurpose", E: "MemoryOptimized" } as const)[m[1] as "B" | "D" | "E"];
}

/** Memory one proxy pod needs: the primary process plus one worker each (service/README figures), MiB. */
export function requiredMemoryMi(workers: number): number {
  return 60 + 150 * workers;
}

export interface NetworkSettings {
  cidr: string;
  existing?: { networkId: string; subnetIds: string[] };
}

export interface ClusterSettings {
  kubernetesVersion: string;
  nodeSize: string;
  nodeMinCount: number;
  nodeMaxCount: number;
  apiAllowedCidrs: string[];
  /** Set when an existing cluster is used. */
  existingKubeconfig?: pulumi.Output<string>;
}

export interface PostgresSettings {
  version: string;
  size: string;
  storageGb: number;
  backupDays: number;
  ha: boolean;
}

export interface RedisSettings {
  size: string;
  memoryGb: number;
  ha: boolean;
}

export interface FilesystemSettings {
  tier: string;
  sizeGb: number;
}

export interface StackConfig {
  cloud: Cloud;
  allowNonHa: boolean;
  /** AWS region, Azure location or GCP region. */
  region: string;
  /** GCP project id (GCP only). */
  gcpProject?: string;
  /**
   * Zones actually used (defaults resolved). Empty on GCP = let GKE choose, and on AWS with an existing VPC = the
   * services choose among the subnets' AZs.
   */
  zones: string[];
  network: NetworkSettings;
  cluster: ClusterSettings;
  postgres: PostgresSettings;
  redis: RedisSettings;
  filesystem: FilesystemSettings;
  proxy: ProxySettings;
  /** Provider API keys by env var name, secret Outputs. */
  providerKeys: Record<string, pulumi.Output<string>>;
}

/**
 * Raised for invalid config; lists every problem, each naming the key and the fix. A RunError, so the Pulumi
 * host prints the message without a stack trace.
 */
export class StackConfigError extends pulumi.RunError {
  constructor(readonly problems: string[]) {
    super(`Invalid llm-proxy stack config:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "StackConfigError";
  }
}

/** Raw values as the SDK hands them out: strings (arrays/objects as JSON), undefined when unset. */
export type RawConfig = Partial<Record<string, string>>;

/** The typed values of the non-secret project keys after defaults. */
export type ConfigValues = {
  [K in ConfigKey]: (typeof CONFIG_KEYS)[K] extends { type: "integer" }
    ? number
    : (typeof CONFIG_KEYS)[K] extends { type: "boolean" }
      ? boolean
      : (typeof CONFIG_KEYS)[K] extends { type: "array" }
        ? string[]
        : string;
};

function parseValue(
  key: string,
  spec: ConfigKeySpec,
  raw: string,
  problems: string[],
): ConfigValue | undefined {
  const fix = `Set it with: pulumi config set ${PROJECT}:${key} <value>`;
  switch (spec.type) {
    case "integer": {
      if (!/^-?\d+$/.test(raw.trim())) {
        problems.push(`${PROJECT}:${key} must be an integer, got "${raw}". ${fix}.`);
        return undefined;
      }
      return Number(raw);
    }
    case "boolean": {
      if (raw !== "true" && raw !== "false") {
        problems.push(`${PROJECT}:${key} must be true or false, got "${raw}". ${fix}.`);
        return undefined;
      }
      return raw === "true";
    }
    case "array": {
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw);
      } catch {
        parsed = undefined;
      }
      // `pulumi config set --path 'key[0]' 1` stores the number 1 (Azure zones): numbers are taken as strings.
      if (
        !Array.isArray(parsed) ||
        !parsed.every((v) => typeof v === "string" || (typeof v === "number" && Number.isFinite(v)))
      ) {
        problems.push(
          `${PROJECT}:${key} must be a list of strings. Set items with: pulumi config set --path '${PROJECT}:${key}[0]' <value>.`,
        );
        return undefined;
      }
      return parsed.map(String);
    }
    default:
      // A blank value is set, so it would replace the default (an empty size, a name of spaces).
      if (raw !== "" && raw.trim() === "") {
        problems.push(
          `${PROJECT}:${key} is blank ("${raw}"). ${fix}, or remove it (back to the default) with: pulumi config rm ${PROJECT}:${key}.`,
        );
        return undefined;
      }
      return raw;
  }
}

/**
 * Apply defaults and types to the raw project config. Pure: `raw` maps bare keys (`replicas`) to the strings
 * `pulumi.Config#get` returns. Secret keys are ignored here (they stay Outputs).
 */
export function parseConfigValues(raw: RawConfig): { values: ConfigValues; problems: string[] } {
  const problems: string[] = [];
  for (const key of Object.keys(raw)) {
    if (key in CONFIG_KEYS) continue;
    const near = closestKey(key);
    problems.push(
      `${PROJECT}:${key} is not a config key of this project${near ? `; did you mean ${PROJECT}:${near}?` : "."} Remove it with: pulumi config rm ${PROJECT}:${key}${near ? `, and set ${PROJECT}:${near} instead` : ""}.`,
    );
  }
  const values: Record<string, ConfigValue> = {};
  for (const [key, spec] of Object.entries(CONFIG_KEYS) as [ConfigKey, ConfigKeySpec][]) {
    if (spec.secret) continue;
    const r = raw[key];
    const parsed = r === undefined ? undefined : parseValue(key, spec, r, problems);
    const value = parsed ?? spec.default;
    if (value !== undefined) values[key] = value;
  }
  return { values: values as ConfigValues, problems };
}

/** Edit distance (Levenshtein), for suggesting the key a typo meant. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** The declared key closest to `key` (case-insensitive), when it is close enough to be a typo of it. */
export function closestKey(key: string): ConfigKey | undefined {
  let best: { k: ConfigKey; d: number } | undefined;
  for (const k of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (!best || d < best.d) best = { k, d };
  }
  return best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? best.k : undefined;
}

/** True when an image reference pins a tag or a digest (a registry port such as `host:5000/x` is not a tag). */
export function hasTagOrDigest(image: string): boolean {
  return image.includes("@") || image.slice(image.lastIndexOf("/") + 1).includes(":");
}

function oneOf<T extends string>(
  key: string,
  value: string,
  allowed: readonly T[],
  problems: string[],
): value is T {
  if ((allowed as readonly string[]).includes(value)) return true;
  problems.push(
    `${PROJECT}:${key} is "${value}", which is not one of ${allowed.join(", ")}. Set one with: pulumi config set ${PROJECT}:${key} ${allowed[0]}.`,
  );
  return false;
}

/** Zones used when `zones` is empty. GCP returns [] (GKE and Memorystore pick the region's zones). */
export function defaultZones(cloud: Cloud, region: string): string[] {
  switch (cloud) {
    case "aws":
      return ["a", "b", "c"].map((z) => `${region}${z}`);
    case "azure":
      return ["1", "2", "3"];
    case "gcp":
      return [];
  }
}

/**
 * Zones used: the configured ones, else the cloud default. An existing AWS VPC has no default: its subnets'
 * AZs are not known before deployment, so the services pick among them (Redis) and nothing is pinned.
 */
export function resolveZones(
  cloud: Cloud,
  region: string,
  v: Pick<ConfigValues, "zones" | "existingNetworkId">,
): string[] {
  if (v.zones.length > 0) return v.zones;
  if (cloud === "aws" && v.existingNetworkId) return [];
  return defaultZones(cloud, region);
}

/** The PDB policy the config asks for: maxUnavailable when set (> 0), else minAvailable. */
export function pdbPolicy(values: Pick<ConfigValues, "pdbMinAvailable" | "pdbMaxUnavailable">): PdbPolicy {
  return values.pdbMaxUnavailable > 0
    ? { maxUnavailable: values.pdbMaxUnavailable }
    : { minAvailable: values.pdbMinAvailable };
}

/** Namespaces Kubernetes creates and uses itself. */
export const RESERVED_NAMESPACES: readonly string[] = [
  "default",
  "kube-system",
  "kube-public",
  "kube-node-lease",
];

const DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

/** A Kubernetes object name that is a DNS-1123 subdomain (Secrets, IngressClasses). */
export function isDns1123Subdomain(name: string): boolean {
  return name.length <= 253 && new RegExp(`^${DNS_LABEL}(\\.${DNS_LABEL})*$`).test(name);
}

/** An Ingress rule host: a lower-case DNS name, optionally a `*.` wildcard; labels of at most 63. */
export function isIngressHost(host: string): boolean {
  const name = host.startsWith("*.") ? host.slice(2) : host;
  return isDns1123Subdomain(name) && name.split(".").every((l) => l.length <= 63);
}

/**
 * Keys whose value differs from the default but has no effect with the rest of the config: one warning each,
 * naming the key and why. Not errors (the stack works as configured); pure, logged by loadStackConfig.
 */
export function ignoredKeyWarnings(v: ConfigValues, opts: { hasExistingKubeconfig: boolean }): string[] {
  const changed = (k: ConfigKey) =>
    JSON.stringify(v[k]) !== JSON.stringify((CONFIG_KEYS[k] as ConfigKeySpec).default);
  const w: string[] = [];
  const ignored = (keys: ConfigKey[], why: string) => {
    for (const k of keys.filter(changed)) {
      w.push(`${PROJECT}:${k} is set but ignored: ${why} Remove it with: pulumi config rm ${PROJECT}:${k}.`);
    }
  };
  if (v.autoscalingEnabled) {
    ignored(
      ["replicas"],
      `${PROJECT}:autoscalingEnabled is true, so the HPA sizes the proxy (${PROJECT}:minReplicas to ${PROJECT}:maxReplicas).`,
    );
  } else {
    ignored(
      ["minReplicas", "maxReplicas", "cpuTargetPercent", "scaleDownStabilizationSeconds"],
      `${PROJECT}:autoscalingEnabled is false, so there is no HPA and ${PROJECT}:replicas sizes the proxy.`,
    );
  }
  if (opts.hasExistingKubeconfig) {
    ignored(
      ["nodeSize", "nodeMinCount", "nodeMaxCount", "kubernetesVersion", "apiAllowedCidrs"],
      `${PROJECT}:existingKubeconfig is set, so no cluster (and no node pool) is created.`,
    );
  }
  // In an existing network the CIDR is not created but admitted: the database, Redis and filesystem rules let this
  // range in. Left at the default, the rules may not match the network at all (the CLI fills in the default, so the
  // program cannot tell a deliberate 10.40.0.0/16 from an unset one: a warning, not an error).
  if (v.existingNetworkId && !changed("networkCidr")) {
    w.push(
      `${PROJECT}:existingNetworkId is set but ${PROJECT}:networkCidr is the default ${v.networkCidr}: the database, Redis and filesystem firewall rules admit that range. If the existing network uses another, set it with: pulumi config set ${PROJECT}:networkCidr <the network's CIDR>.`,
    );
  }
  return w;
}

export interface ProviderValues {
  region?: string;
  gcpProject?: string;
}

/**
 * Every rule the program enforces before creating anything. Pure; returns one message per problem, each
 * naming the key and how to fix it.
 */
export function validateConfigValues(
  v: ConfigValues,
  provider: ProviderValues,
  opts: { hasExistingKubeconfig: boolean },
): string[] {
  const p: string[] = [];
  const key = (k: string) => `${PROJECT}:${k}`;
  const cloudOk = CLOUDS.includes(v.cloud as Cloud);
  if (!v.cloud) {
    p.push(`${key("cloud")} is not set. Set it with: pulumi config set ${key("cloud")} aws|azure|gcp.`);
  } else if (!cloudOk) {
    p.push(`${key("cloud")} is "${v.cloud}", an unknown cloud. Use one of aws, azure, gcp.`);
  }
  if (cloudOk) {
    const cloud = v.cloud as Cloud;
    const settings = PROVIDER_SETTINGS[cloud];
    if (!provider.region) {
      p.push(`${settings.region} is not set. Set it with: pulumi config set ${settings.region} <value>.`);
    }
    if (settings.project && !provider.gcpProject) {
      p.push(
        `${settings.project} is not set. Set it with: pulumi config set ${settings.project} <project-id>.`,
      );
    }
    const tier = v.filesystemTier || CLOUD_DEFAULTS[cloud].filesystemTier;
    if (oneOf("filesystemTier", tier, FILESYSTEM_TIERS[cloud], p)) {
      const zonal = !HA_FILESYSTEM_TIERS[cloud].includes(tier);
      if (zonal && !v.allowNonHa) {
        p.push(
          `${key("filesystemTier")} "${tier}" is zonal and does not survive the loss of a zone. Use ${HA_FILESYSTEM_TIERS[cloud].join(" or ")}, or set ${key("allowNonHa")} true for a dev stack.`,
        );
      }
      // A zonal file system lives in the first zone: it must be a zone name the program knows.
      const zoneNeeded = zonal && (cloud === "gcp" || (cloud === "aws" && !!v.existingNetworkId));
      if (zoneNeeded && v.zones.length === 0) {
        p.push(
          `${key("filesystemTier")} "${tier}" is zonal and is placed in the first of ${key("zones")}, which is empty. Set it with: pulumi config set --path '${key("zones")}[0]' <zone>${cloud === "aws" ? " (the AZ of the first of existingSubnetIds)" : ""}.`,
        );
      }
      if (cloud === "gcp" && v.filesystemSizeGb < (FILESTORE_MIN_CAPACITY_GB[tier] ?? 0)) {
        p.push(
          `${key("filesystemSizeGb")} is ${v.filesystemSizeGb}, below the ${FILESTORE_MIN_CAPACITY_GB[tier]} GB minimum of Filestore ${tier}. Set it with: pulumi config set ${key("filesystemSizeGb")} ${FILESTORE_MIN_CAPACITY_GB[tier]}.`,
        );
      }
      const maxGb = FILESTORE_MAX_CAPACITY_GB[tier];
      if (cloud === "gcp" && maxGb !== undefined && v.filesystemSizeGb > maxGb) {
        p.push(
          `${key("filesystemSizeGb")} is ${v.filesystemSizeGb}, above the ${maxGb} GiB maximum of Filestore ${tier}. Set it with: pulumi config set ${key("filesystemSizeGb")} ${maxGb}.`,
        );
      }
    }
    if (
      cloud === "azure" &&
      v.filesystemSizeGb >= 1 &&
      (v.filesystemSizeGb < AZURE_SHARE_MIN_GB || v.filesystemSizeGb > AZURE_SHARE_MAX_GB)
    ) {
      p.push(
        `${key("filesystemSizeGb")} is ${v.filesystemSizeGb}, outside the ${AZURE_SHARE_MIN_GB}-${AZURE_SHARE_MAX_GB} GB a Premium (NFS) Azure file share allows. Set it with: pulumi config set ${key("filesystemSizeGb")} ${v.filesystemSizeGb < AZURE_SHARE_MIN_GB ? AZURE_SHARE_MIN_GB : AZURE_SHARE_MAX_GB}.`,
      );
    }

    // PostgreSQL sizes the cloud accepts.
    const pgSize = v.postgresSize || CLOUD_DEFAULTS[cloud].postgresSize;
    const storage = v.postgresStorageGb || CLOUD_DEFAULTS[cloud].postgresStorageGb;
    if (cloud === "azure") {
      const allowed: readonly number[] = AZURE_POSTGRES_STORAGE_GB;
      if (v.postgresStorageGb > 0 && !allowed.includes(storage)) {
        const next = allowed.find((gb) => gb > storage);
        p.push(
          `${key("postgresStorageGb")} is ${storage}, a size Azure Database for PostgreSQL does not offer. Use one of ${allowed.join(", ")}${next ? `, e.g. pulumi config set ${key("postgresStorageGb")} ${next}` : ""}.`,
        );
      }
      const pgTier = azurePostgresTier(pgSize);
      if (!pgTier) {
        p.push(
          `${key("postgresSize")} "${pgSize}" is not a Flexible Server SKU name. Use Standard_D<n>ds_v5 (GeneralPurpose), Standard_E<n>ds_v5 (MemoryOptimized) or, without HA, Standard_B<n>ms (Burstable).`,
        );
      } else if (pgTier === "Burstable" && v.postgresHa) {
        p.push(
          `${key("postgresSize")} "${pgSize}" is Burstable, which has no zone-redundant HA. Use a Standard_D* or Standard_E* SKU, or set ${key("postgresHa")} false (with ${key("allowNonHa")}) for a dev stack.`,
        );
      }
    }
    if (cloud === "aws" && v.postgresStorageGb > 0 && v.postgresStorageGb < RDS_MIN_STORAGE_GB) {
      p.push(
        `${key("postgresStorageGb")} is ${v.postgresStorageGb}, below the ${RDS_MIN_STORAGE_GB} GB RDS gp3 minimum. Set it with: pulumi config set ${key("postgresStorageGb")} ${RDS_MIN_STORAGE_GB}.`,
      );
    }
    if (cloud === "aws" && v.postgresStorageGb > RDS_MAX_STORAGE_GB) {
      p.push(
        `${key("postgresStorageGb")} is ${v.postgresStorageGb}, above the ${RDS_MAX_STORAGE_GB} GiB (64 TiB) an RDS volume holds. Set it with: pulumi config set ${key("postgresStorageGb")} ${RDS_MAX_STORAGE_GB}.`,
      );
    }
    if (
      cloud === "gcp" &&
      v.postgresStorageGb > 0 &&
      (v.postgresStorageGb < CLOUD_SQL_STORAGE_GB.min || v.postgresStorageGb > CLOUD_SQL_STORAGE_GB.max)
    ) {
      const fix =
        v.postgresStorageGb < CLOUD_SQL_STORAGE_GB.min ? CLOUD_SQL_STORAGE_GB.min : CLOUD_SQL_STORAGE_GB.max;
      p.push(
        `${key("postgresStorageGb")} is ${v.postgresStorageGb}, outside the ${CLOUD_SQL_STORAGE_GB.min}-${CLOUD_SQL_STORAGE_GB.max} GB (64 TB) Cloud SQL storage holds. Set it with: pulumi config set ${key("postgresStorageGb")} ${fix}.`,
      );
    }
    if (cloud === "gcp" && v.redisMemoryGb > MEMORYSTORE_MAX_GB) {
      p.push(
        `${key("redisMemoryGb")} is ${v.redisMemoryGb}, above the ${MEMORYSTORE_MAX_GB} GB a Memorystore for Redis instance holds. Set it with: pulumi config set ${key("redisMemoryGb")} ${MEMORYSTORE_MAX_GB}.`,
      );
    }
    const backup = AZURE_POSTGRES_BACKUP_DAYS;
    // Below 1 or above 35 is refused for every cloud further down.
    if (cloud === "azure" && v.postgresBackupDays >= 1 && v.postgresBackupDays < backup.min) {
      p.push(
        `${key("postgresBackupDays")} is ${v.postgresBackupDays}, outside the ${backup.min}-${backup.max} days Azure Database for PostgreSQL keeps backups. Set it with: pulumi config set ${key("postgresBackupDays")} ${backup.min}.`,
      );
    }
    if (cloud === "gcp" && v.postgresBackupDays >= 1 && v.postgresBackupDays < GCP_POSTGRES_MIN_BACKUP_DAYS) {
      p.push(
        `${key("postgresBackupDays")} is ${v.postgresBackupDays}: Cloud SQL must keep more backups than days of point-in-time recovery logs, and at least 1 day of logs, so it needs ${GCP_POSTGRES_MIN_BACKUP_DAYS} or more. Set it with: pulumi config set ${key("postgresBackupDays")} ${GCP_POSTGRES_MIN_BACKUP_DAYS}.`,
      );
    }

    // Zones the cloud (and the network plan) can use.
    if (cloud === "aws" && v.zones.length > AWS_MAX_ZONES) {
      p.push(
        `${key("zones")} lists ${v.zones.length} zones; the network plan has room for ${AWS_MAX_ZONES}. List at most ${AWS_MAX_ZONES} availability zones.`,
      );
    }
    if (cloud === "azure") {
      const bad = v.zones.filter((z) => !(AZURE_ZONES as readonly string[]).includes(z));
      if (bad.length > 0) {
        p.push(
          `${key("zones")} lists ${bad.map((z) => `"${z}"`).join(", ")}: Azure zones are ${AZURE_ZONES.join(", ")}. Set them with: pulumi config set --path '${key("zones")}[0]' 1 (and [1], [2]).`,
        );
      }
    }

    // AWS with an existing VPC: EFS takes one mount target per AZ, so one subnet per AZ; zones, if set, name them.
    if (cloud === "aws" && v.existingNetworkId && v.existingSubnetIds.length > 0) {
      const ids = v.existingSubnetIds;
      const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
      if (dupes.length > 0) {
        p.push(
          `${key("existingSubnetIds")} lists ${dupes.join(", ")} more than once. List each subnet once.`,
        );
      }
      if (ids.length < 2 && !v.allowNonHa) {
        p.push(
          `${key("existingSubnetIds")} lists ${ids.length} subnet: the database, Redis and EFS need subnets in at least 2 AZs. List one private subnet per AZ, or set ${key("allowNonHa")} true for a dev stack.`,
        );
      }
      if (v.zones.length > 0 && v.zones.length !== ids.length) {
        p.push(
          `${key("zones")} lists ${v.zones.length} zone(s) but ${key("existingSubnetIds")} ${ids.length} subnet(s). With an existing VPC, zones names the AZ of each subnet in the same order, or is left empty.`,
        );
      }
    }

    // Zones of the stack's region only (Azure zones are checked above).
    if (provider.region && (cloud === "aws" || cloud === "gcp")) {
      const region = provider.region;
      const escaped = region.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const zoneOf = new RegExp(cloud === "aws" ? `^${escaped}[a-z]$` : `^${escaped}-[a-z]$`);
      const foreign = v.zones.filter((z) => !zoneOf.test(z));
      if (foreign.length > 0) {
        const example = cloud === "aws" ? `${region}a` : `${region}-b`;
        p.push(
          `${key("zones")} lists ${foreign.map((z) => `"${z}"`).join(", ")}, not a zone of ${settings.region} ${region} (${cloud === "aws" ? "AWS zones are <region><letter>" : "GCP zones are <region>-<letter>"}, e.g. ${example}). List zones of ${region} with: pulumi config set --path '${key("zones")}[0]' ${example}, or change ${settings.region}.`,
        );
      }
    }

    // An existing cluster reaches only its own network: the databases and the filesystem must be created there.
    if (opts.hasExistingKubeconfig && !v.existingNetworkId) {
      p.push(
        `${key("existingKubeconfig")} is set but ${key("existingNetworkId")} is empty: the program would create a new network and put PostgreSQL, Redis and the filesystem there, out of the existing cluster's reach. The databases must live in the cluster's network: set ${key("existingNetworkId")} to ${NETWORK_ID_KIND[cloud]} (and ${key("existingSubnetIds")}) with: pulumi config set ${key("existingNetworkId")} <id>.`,
      );
    }

    // The Kubernetes API of a cluster the program creates: reachable from named networks only.
    if (!opts.hasExistingKubeconfig) {
      const cidrs = v.apiAllowedCidrs;
      const fix = `pulumi config set --path '${key("apiAllowedCidrs")}[0]' <your egress CIDR, e.g. 203.0.113.0/24>`;
      if (cidrs.length === 0) {
        p.push(
          `${key("apiAllowedCidrs")} is empty. List the networks pulumi and kubectl reach the cluster's API from (office, VPN, CI runner egress): ${fix}.`,
        );
      }
      for (const c of cidrs) {
        if (!isIpv4Cidr(c))
          p.push(
            `${key("apiAllowedCidrs")} entry "${c}" is not an IPv4 CIDR (four octets 0-255, prefix 0-32). Use e.g. 203.0.113.0/24.`,
          );
      }
      const open = cidrs.filter((c) => /\/0$/.test(c));
      if (open.length > 0 && !v.allowNonHa) {
        p.push(
          `${key("apiAllowedCidrs")} lists ${open.join(", ")}, which opens the Kubernetes API to the whole internet. List only the networks that deploy (${fix}), or set ${key("allowNonHa")} true for a dev stack.`,
        );
      }
    }
    if (v.existingNetworkId && v.existingSubnetIds.length === 0) {
      p.push(
        `${key("existingNetworkId")} is set but ${key("existingSubnetIds")} is empty. List the subnets with: pulumi config set --path '${key("existingSubnetIds")}[0]' <id>.`,
      );
    }
    if (cloud === "azure" && v.existingNetworkId && v.existingSubnetIds.length !== 3) {
      p.push(
        `${key("existingSubnetIds")} must list 3 subnets on Azure: cluster, Postgres-delegated, private endpoints.`,
      );
    }
    if (!v.existingNetworkId && v.existingSubnetIds.length > 0) {
      p.push(`${key("existingSubnetIds")} is set without ${key("existingNetworkId")}. Set both, or neither.`);
    }
  }
  const dupZones = v.zones.filter((z, i) => v.zones.indexOf(z) !== i);
  if (dupZones.length > 0) {
    p.push(`${key("zones")} lists ${[...new Set(dupZones)].join(", ")} more than once. List each zone once.`);
  }
  if (!isIpv4Cidr(v.networkCidr)) {
    p.push(
      `${key("networkCidr")} "${v.networkCidr}" is not an IPv4 CIDR (four octets 0-255, prefix 0-32). Use e.g. 10.40.0.0/16.`,
    );
  } else if (canonicalCidr(v.networkCidr) !== v.networkCidr) {
    const canonical = canonicalCidr(v.networkCidr);
    p.push(
      `${key("networkCidr")} "${v.networkCidr}" has host bits set; the clouds take only the network address. Set it with: pulumi config set ${key("networkCidr")} ${canonical}.`,
    );
  } else {
    const prefix = Number(v.networkCidr.split("/")[1]);
    if (prefix > 16 && !v.existingNetworkId) {
      p.push(
        `${key("networkCidr")} must be a /16 or larger for the subnets the program creates. Use e.g. 10.40.0.0/16.`,
      );
    } else if (prefix < 16 && !v.existingNetworkId && v.cloud === "aws") {
      p.push(
        `${key("networkCidr")} "${v.networkCidr}" is larger than a /16: an AWS VPC takes /16 to /28, and the subnet plan (a /19 private subnet per AZ, the public /24s in the last /20) needs a whole /16. Use exactly a /16, e.g. pulumi config set ${key("networkCidr")} 10.40.0.0/16.`,
      );
    }
    // Ranges the created cluster fixes: AKS pods and services, the GKE control plane.
    if (!opts.hasExistingKubeconfig) {
      const fixed: [string, string][] =
        v.cloud === "azure"
          ? [
              [AKS_SERVICE_CIDR, "the AKS service range"],
              [AKS_POD_CIDR, "the AKS pod range"],
            ]
          : v.cloud === "gcp"
            ? [[GKE_MASTER_CIDR, "the GKE control-plane range"]]
            : [];
      for (const [range, what] of fixed) {
        if (cidrsOverlap(v.networkCidr, range)) {
          p.push(
            `${key("networkCidr")} ${v.networkCidr} overlaps ${range}, ${what} the program gives the cluster, which the cloud refuses. Use a range outside it, e.g. pulumi config set ${key("networkCidr")} 10.40.0.0/16.`,
          );
        }
      }
    }
  }

  // Replicas, autoscaling and the disruption budget.
  const positive: ConfigKey[] = [
    "minReplicas",
    "cpuRequestMillicores",
    "memoryRequestMi",
    "memoryLimitMi",
    "kbStorageGi",
    "chromaStorageGi",
    "filesystemSizeGb",
    "redisMemoryGb",
    "nodeMinCount",
    "nodeMaxCount",
  ];
  for (const k of positive) {
    if ((v[k] as number) < 1) p.push(`${key(k)} must be at least 1, got ${v[k]}.`);
  }
  for (const k of [
    "cpuLimitMillicores",
    "preStopDelaySeconds",
    "scaleDownStabilizationSeconds",
    "pdbMaxUnavailable",
    "postgresStorageGb",
  ]) {
    const n = v[k as ConfigKey] as number;
    if (n < 0) p.push(`${key(k)} must not be negative, got ${n}.`);
  }
  // Values that become the proxy's environment: the service's own ranges.
  for (const [env, range] of Object.entries(SERVICE_ENV_RANGES)) {
    for (const k of range.keys) {
      const n = v[k];
      if (n < range.min || n > range.max) {
        p.push(
          `${key(k)} is ${n}, outside ${range.min}-${range.max}, the range the proxy accepts for ${env} (its pods would not start). Set it with: pulumi config set ${key(k)} ${n < range.min ? range.min : range.max}.`,
        );
      }
    }
  }
  if (v.scaleDownStabilizationSeconds > HPA_MAX_STABILIZATION_SECONDS) {
    p.push(
      `${key("scaleDownStabilizationSeconds")} is ${v.scaleDownStabilizationSeconds}, above the ${HPA_MAX_STABILIZATION_SECONDS} seconds Kubernetes allows for an HPA stabilization window. Set it with: pulumi config set ${key("scaleDownStabilizationSeconds")} ${HPA_MAX_STABILIZATION_SECONDS}.`,
    );
  }
  if (v.minReplicas > v.maxReplicas) {
    p.push(
      `${key("minReplicas")} (${v.minReplicas}) is greater than ${key("maxReplicas")} (${v.maxReplicas}). Lower minReplicas or raise maxReplicas.`,
    );
  }
  if (v.cpuTargetPercent < 1 || v.cpuTargetPercent > 100) {
    p.push(
      `${key("cpuTargetPercent")} is ${v.cpuTargetPercent}, outside 1-100. Use a percentage such as 70.`,
    );
  }
  const floor = v.autoscalingEnabled ? v.minReplicas : v.replicas;
  const floorKey = v.autoscalingEnabled ? "minReplicas" : "replicas";
  const pdb = pdbPolicy(v);
  if ("minAvailable" in pdb) {
    if (pdb.minAvailable < 0) p.push(`${key("pdbMinAvailable")} must not be negative.`);
    if (pdb.minAvailable >= floor) {
      p.push(
        `${key("pdbMinAvailable")} (${pdb.minAvailable}) must be below ${key(floorKey)} (${floor}): otherwise the PodDisruptionBudget blocks every node drain. Set it to ${Math.max(0, floor - 1)} or raise ${floorKey}.`,
      );
    }
    // The same rule as maxUnavailable >= the floor: minAvailable 0 lets a drain evict every pod at once.
    if (pdb.minAvailable === 0 && floor >= 2 && !v.allowNonHa) {
      p.push(
        `${key("pdbMinAvailable")} is 0, which lets every pod be evicted at once (${key(floorKey)} is ${floor}). Set it to at least 1 (e.g. ${floor - 1}).`,
      );
    }
  } else if (pdb.maxUnavailable >= floor && !v.allowNonHa) {
    p.push(
      `${key("pdbMaxUnavailable")} (${pdb.maxUnavailable}) lets every pod be evicted at once (${key(floorKey)} is ${floor}). Set it below ${floor}.`,
    );
  }

  // Resources.
  const need = requiredMemoryMi(v.workers);
  if (v.memoryRequestMi < need) {
    p.push(
      `${key("memoryRequestMi")} (${v.memoryRequestMi}) is below what ${v.workers} worker(s) need (${need} MiB = 60 + 150 x workers). Raise memoryRequestMi or lower workers.`,
    );
  }
  if (v.memoryLimitMi < v.memoryRequestMi) {
    p.push(
      `${key("memoryLimitMi")} (${v.memoryLimitMi}) is below ${key("memoryRequestMi")} (${v.memoryRequestMi}).`,
    );
  }
  if (v.cpuLimitMillicores > 0 && v.cpuLimitMillicores < v.cpuRequestMillicores) {
    p.push(
      `${key("cpuLimitMillicores")} is below ${key("cpuRequestMillicores")}. Raise it or set 0 (no limit).`,
    );
  }
  if (v.nodeMinCount > v.nodeMaxCount) {
    p.push(
      `${key("nodeMinCount")} (${v.nodeMinCount}) is greater than ${key("nodeMaxCount")} (${v.nodeMaxCount}).`,
    );
  }
  if (v.postgresBackupDays < 1 || v.postgresBackupDays > 35) {
    p.push(
      `${key("postgresBackupDays")} is ${v.postgresBackupDays}, outside 1-35. Keep backups for 7-35 days.`,
    );
  }

  oneOf("logLevel", v.logLevel, LOG_LEVELS, p);
  oneOf("rateLimitFailureMode", v.rateLimitFailureMode, RATE_LIMIT_FAILURE_MODES, p);
  oneOf("serviceType", v.serviceType, SERVICE_TYPES, p);
  if (!hasTagOrDigest(v.image)) {
    p.push(`${key("image")} "${v.image}" has no tag or digest. Pin one, e.g. ${v.image}:0.1.0.`);
  }
  if (v.chromaEnabled && !hasTagOrDigest(v.chromaImage)) {
    p.push(
      `${key("chromaImage")} "${v.chromaImage}" has no tag or digest. Pin one, e.g. ${v.chromaImage}:${CONFIG_KEYS.chromaImage.default.split(":")[1]}.`,
    );
  }
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(v.namespace)) {
    p.push(
      `${key("namespace")} "${v.namespace}" is not a valid Kubernetes namespace name (lowercase DNS label).`,
    );
  } else if (v.namespace.length > MAX_NAMESPACE_LENGTH) {
    p.push(
      `${key("namespace")} "${v.namespace}" is ${v.namespace.length} characters; at most ${MAX_NAMESPACE_LENGTH} fit (the program derives "<namespace>-volume-init", and namespace names stop at 63). Use a shorter name.`,
    );
  }
  if (!/^\d+\.\d+$/.test(v.kubernetesVersion)) {
    const m = /^v?(\d+)\.(\d+)/.exec(v.kubernetesVersion);
    p.push(
      `${key("kubernetesVersion")} "${v.kubernetesVersion}" is not a <major>.<minor> version. Set it with: pulumi config set ${key("kubernetesVersion")} ${m ? `${m[1]}.${m[2]}` : CONFIG_KEYS.kubernetesVersion.default}.`,
    );
  }
  if (!/^[1-9]\d*$/.test(v.postgresVersion)) {
    const m = /^v?(\d+)/.exec(v.postgresVersion);
    p.push(
      `${key("postgresVersion")} "${v.postgresVersion}" is not a PostgreSQL major version (RDS parameter group family, Azure server version and Cloud SQL databaseVersion all take the major only). Set it with: pulumi config set ${key("postgresVersion")} ${m ? m[1] : CONFIG_KEYS.postgresVersion.default}.`,
    );
  }
  if (RESERVED_NAMESPACES.includes(v.namespace)) {
    p.push(
      `${key("namespace")} is "${v.namespace}", a namespace Kubernetes reserves for itself; the proxy's Pod Security label and NetworkPolicies would apply to everything in it. Set its own with: pulumi config set ${key("namespace")} ${CONFIG_KEYS.namespace.default}.`,
    );
  }
  if (v.ingressHost && !isIngressHost(v.ingressHost)) {
    const host = v.ingressHost
      .replace(/^[a-z][a-z0-9+.-]*:\/\//i, "")
      .split(/[/:?#]/)[0]
      .toLowerCase();
    p.push(
      `${key("ingressHost")} "${v.ingressHost}" is not a lower-case DNS name (no scheme, port or path). Set it with: pulumi config set ${key("ingressHost")} ${isIngressHost(host) ? host : "proxy.example.com"}.`,
    );
  }
  if (v.ingressTlsSecret && !isDns1123Subdomain(v.ingressTlsSecret)) {
    p.push(
      `${key("ingressTlsSecret")} "${v.ingressTlsSecret}" is not a valid Secret name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253). Use e.g. llm-proxy-tls.`,
    );
  }
  if (!v.ingressHost) {
    for (const k of ["ingressClassName", "ingressTlsSecret"] as const) {
      if (v[k]) {
        p.push(
          `${key(k)} is set but ${key("ingressHost")} is empty, so no Ingress is created. Set ${key("ingressHost")} too, or remove it with: pulumi config rm ${key(k)}.`,
        );
      }
    }
  }

  // High availability: every single point of failure needs the explicit dev-stack flag.
  if (!v.allowNonHa) {
    const nonHa = `or set ${key("allowNonHa")} true for a dev stack`;
    if (v.zones.length === 1) p.push(`${key("zones")} lists a single zone. List at least 2 zones ${nonHa}.`);
    if (!v.postgresHa) p.push(`${key("postgresHa")} is false (single-zone database). Set it true ${nonHa}.`);
    if (!v.redisHa) p.push(`${key("redisHa")} is false (no Redis failover). Set it true ${nonHa}.`);
    if (floor < 2)
      p.push(`${key(floorKey)} is ${floor}: one pod is a single point of failure. Use 2 or more ${nonHa}.`);
    if (!opts.hasExistingKubeconfig && v.nodeMinCount < 2 && v.cloud !== "gcp") {
      p.push(`${key("nodeMinCount")} is ${v.nodeMinCount}: nodes must span zones. Use 2 or more ${nonHa}.`);
    }
  }
  return p;
}

/** Build the proxy settings from validated values; `proxyConfig` is the parsed `proxyConfig` mapping. */
export function proxySettings(v: ConfigValues, proxyConfig: { [k: string]: Json } = {}): ProxySettings {
  return {
    namespace: v.namespace,
    image: v.image,
    replicas: v.replicas,
    autoscaling: {
      enabled: v.autoscalingEnabled,
      minReplicas: v.minReplicas,
      maxReplicas: v.maxReplicas,
      cpuTargetPercent: v.cpuTargetPercent,
      scaleDownStabilizationSeconds: v.scaleDownStabilizationSeconds,
    },
    pdb: pdbPolicy(v),
    workers: v.workers,
    cpuRequestMillicores: v.cpuRequestMillicores,
    cpuLimitMillicores: v.cpuLimitMillicores,
    memoryRequestMi: v.memoryRequestMi,
    memoryLimitMi: v.memoryLimitMi,
    requestTimeoutSeconds: v.requestTimeoutSeconds,
    preStopDelaySeconds: v.preStopDelaySeconds,
    logLevel: v.logLevel as LogLevel,
    cacheEnabled: v.cacheEnabled,
    cacheTtlSeconds: v.cacheTtlSeconds,
    usageRetentionDays: v.usageRetentionDays,
    rateLimitFailureMode: v.rateLimitFailureMode as RateLimitFailureMode,
    chromaEnabled: v.chromaEnabled,
    chromaImage: v.chromaImage,
    kbStorageGi: v.kbStorageGi,
    chromaStorageGi: v.chromaStorageGi,
    serviceType: v.serviceType as ServiceType,
    ingress: v.ingressHost
      ? {
          host: v.ingressHost,
          trustedProxyHops: v.trustedProxyHops,
          ...(v.ingressClassName ? { className: v.ingressClassName } : {}),
          ...(v.ingressTlsSecret ? { tlsSecretName: v.ingressTlsSecret } : {}),
        }
      : undefined,
    proxyConfig,
  };
}

/**
 * Parse and validate everything that is not secret. Pure; throws StackConfigError listing every problem.
 * `secrets` are the Outputs of the secret keys that are set (only their presence matters here).
 */
export function parseStackConfig(
  raw: RawConfig,
  provider: ProviderValues,
  secrets: Partial<Record<ConfigKey, pulumi.Output<string>>> = {},
): StackConfig {
  const { values: v, problems } = parseConfigValues(raw);
  problems.push(
    ...validateConfigValues(v, provider, { hasExistingKubeconfig: !!secrets.existingKubeconfig }),
  );
  const parsedProxyConfig = parseProxyConfig(v.proxyConfig);
  if ("problem" in parsedProxyConfig) {
    problems.push(
      `${PROJECT}:proxyConfig ${parsedProxyConfig.problem}. Fix the YAML and set it again with: pulumi config set --secret ${PROJECT}:proxyConfig -- "$(cat proxy-config.yaml)".`,
    );
  }
  if (problems.length > 0) throw new StackConfigError(problems);
  const proxy = proxySettings(v, "value" in parsedProxyConfig ? parsedProxyConfig.value : {});
  const providerKeys: Record<string, pulumi.Output<string>> = {};
  for (const [k, env] of Object.entries(PROVIDER_KEY_ENV)) {
    const s = secrets[k as ConfigKey];
    if (s) providerKeys[env] = s;
  }
  // Last gate: the service's own loader accepts the environment and the merged config file the pods will get.
  const refused = serviceConfigProblems(proxy, Object.keys(providerKeys));
  if (refused.length > 0) throw new StackConfigError(refused);
  const cloud = v.cloud as Cloud;
  const region = provider.region as string;
  const defaults = CLOUD_DEFAULTS[cloud];
  return {
    cloud,
    allowNonHa: v.allowNonHa,
    region,
    gcpProject: provider.gcpProject,
    zones: resolveZones(cloud, region, v),
    network: {
      cidr: v.networkCidr,
      existing: v.existingNetworkId
        ? { networkId: v.existingNetworkId, subnetIds: v.existingSubnetIds }
        : undefined,
    },
    cluster: {
      kubernetesVersion: v.kubernetesVersion,
      nodeSize: v.nodeSize || defaults.nodeSize,
      nodeMinCount: v.nodeMinCount,
      nodeMaxCount: v.nodeMaxCount,
      apiAllowedCidrs: v.apiAllowedCidrs,
      existingKubeconfig: secrets.existingKubeconfig,
    },
    postgres: {
      version: v.postgresVersion,
      size: v.postgresSize || defaults.postgresSize,
      storageGb: v.postgresStorageGb || defaults.postgresStorageGb,
      backupDays: v.postgresBackupDays,
      ha: v.postgresHa,
    },
    redis: { size: v.redisSize || defaults.redisSize, memoryGb: v.redisMemoryGb, ha: v.redisHa },
    filesystem: { tier: v.filesystemTier || defaults.filesystemTier, sizeGb: v.filesystemSizeGb },
    proxy,
    providerKeys,
  };
}

/** Deploy-time values (secrets, endpoints) as placeholders shaped like the real ones, for the service check. */
const DEPLOY_TIME_ENV: Record<string, string> = {
  DATABASE_URL: "postgres://llmproxy:placeholder@database.invalid:5432/llmproxy?sslmode=verify-full",
  REDIS_URL: "rediss://:placeholder@redis.invalid:6379",
  PROXY_MASTER_KEY: "placeholder-master-key-of-at-least-32-characters",
};

/**
 * What the service's loadConfig (service/config.ts) refuses in the environment and config file the pods would get,
 * as stack config problems; [] when it starts. Secrets and endpoints are placeholders. The service's messages name
 * a path in the merged file; a bad regex's text is left out (proxyConfig may be a secret).
 */
export function serviceConfigProblems(proxy: ProxySettings, providerKeyEnvs: string[]): string[] {
  const env: Record<string, string> = {
    ...proxyPlainEnv(proxy, proxy.chromaEnabled ? "http://chroma.invalid:8000" : undefined),
    ...DEPLOY_TIME_ENV,
  };
  for (const e of providerKeyEnvs) env[e] = "placeholder-provider-key";
  try {
    loadConfig({ env, fileText: proxyConfigYaml(proxy, providerKeyEnvs) });
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems.map((problem) => {
      const safe = problem.replace(/(invalid regex).*$/s, "$1");
      const envName = /^env ([A-Z0-9_]+)/.exec(problem)?.[1];
      if (envName) {
        const k = ENV_CONFIG_KEY[envName];
        return k
          ? `${PROJECT}:${k}: the proxy would refuse its environment (${safe}). Change ${PROJECT}:${k}.`
          : `The proxy would refuse the environment the program sets (${safe}): a bug in stacks/app, not in the stack config.`;
      }
      return `${PROJECT}:proxyConfig: the proxy would refuse the merged config file (${safe}). Fix that entry in proxyConfig (models are merged by name; other keys replace or extend the generated file).`;
    });
  }
}

/** Read the stack's config from the Pulumi engine, once. The only reader of pulumi.Config. */
export function loadStackConfig(): StackConfig {
  const cfg = new pulumi.Config(PROJECT);
  const raw: RawConfig = {};
  // Every key set under the project namespace: the ones not declared are typos (reported with the closest key).
  for (const full of Object.keys(pulumi.runtime.allConfig())) {
    if (!full.startsWith(`${PROJECT}:`)) continue;
    const bare = full.slice(PROJECT.length + 1).replace(/^config:/, "");
    if (!(bare in CONFIG_KEYS)) raw[bare] = "";
  }
  const secrets: Partial<Record<ConfigKey, pulumi.Output<string>>> = {};
  for (const [key, spec] of Object.entries(CONFIG_KEYS) as [ConfigKey, ConfigKeySpec][]) {
    if (spec.secret) {
      const s = cfg.getSecret(key);
      if (s !== undefined) secrets[key] = s;
    } else {
      raw[key] = cfg.get(key);
    }
  }
  const settings = PROVIDER_SETTINGS[raw.cloud as Cloud] as (typeof PROVIDER_SETTINGS)[Cloud] | undefined;
  const read = (qualified: string | undefined) => {
    if (!qualified) return undefined;
    const [ns, name] = qualified.split(":");
    return new pulumi.Config(ns).get(name);
  };
  const provider: ProviderValues = settings
    ? { region: read(settings.region), gcpProject: read(settings.project) }
    : {};
  const config = parseStackConfig(raw, provider, secrets);
  const hasExistingKubeconfig = !!secrets.existingKubeconfig;
  for (const warning of ignoredKeyWarnings(parseConfigValues(raw).values, { hasExistingKubeconfig })) {
    void pulumi.log.warn(warning);
  }
  return config;
}
