// Redis invariants on every cloud: a replica in another zone with automatic failover, TLS on the wire
// (and at rest where it is optional), and authentication required.
import { ResourceValidationPolicy, validateResourceOfType } from "@pulumi/policy";
import * as elasticache from "@pulumi/aws/elasticache";
import * as redis from "@pulumi/azure-native/redis";
import * as redisenterprise from "@pulumi/azure-native/redisenterprise";
import * as gcpRedis from "@pulumi/gcp/redis";

export const redisHighAvailability: ResourceValidationPolicy = {
  name: "redis-high-availability",
  description: "Redis has a replica in another zone and fails over to it automatically.",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(elasticache.ReplicationGroup, (group, _args, report) => {
      const clustered = group.clusterMode === "enabled" || (group.numNodeGroups ?? 0) > 1;
      const copies = clustered ? 1 + (group.replicasPerNodeGroup ?? 0) : (group.numCacheClusters ?? 1);
      if (copies < 2) {
        report(
          clustered
            ? "ElastiCache must set replicasPerNodeGroup >= 1 (a replica per shard)."
            : "ElastiCache must set numCacheClusters >= 2 (a primary and a replica).",
        );
      }
      if (group.automaticFailoverEnabled !== true)
        report("ElastiCache must set automaticFailoverEnabled: true.");
      if (group.multiAzEnabled !== true) report("ElastiCache must set multiAzEnabled: true.");
    }),
    validateResourceOfType(redis.Redis, (cache, _args, report) => {
      // Basic has no replica; Standard and Premium replicate, and spread across zones when asked to.
      if (cache.sku?.name === "Basic")
        report("Azure Cache for Redis must use the Standard or Premium SKU (Basic has no replica).");
      const zones = cache.zones ?? [];
      if (zones.length < 2 && cache.zonalAllocationPolicy !== "Automatic") {
        report(
          "Azure Cache for Redis must be zone-redundant: zones with >= 2 entries, or zonalAllocationPolicy: Automatic.",
        );
      }
    }),
    validateResourceOfType(redisenterprise.RedisEnterprise, (cluster, _args, report) => {
      if (cluster.highAvailability === "Disabled")
        report("Azure Managed Redis must not disable highAvailability.");
    }),
    validateResourceOfType(gcpRedis.Instance, (instance, _args, report) => {
      if (instance.tier !== "STANDARD_HA")
        report("Memorystore must use tier: STANDARD_HA (BASIC has no replica).");
    }),
  ],
};

export const redisTls: ResourceValidationPolicy = {
  name: "redis-tls",
  description: "Redis accepts only TLS connections (and encrypts data at rest where that is optional).",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(elasticache.ReplicationGroup, (group, _args, report) => {
      if (group.transitEncryptionEnabled !== true)
        report("ElastiCache must set transitEncryptionEnabled: true.");
      if (group.transitEncryptionMode === "preferred") {
        report("ElastiCache must use transitEncryptionMode: required (preferred still accepts plaintext).");
      }
      // Valkey encrypts at rest by default; Redis OSS does not.
      const atRest = group.atRestEncryptionEnabled ?? group.engine === "valkey";
      if (atRest !== true) report("ElastiCache must set atRestEncryptionEnabled: true.");
    }),
    validateResourceOfType(redis.Redis, (cache, _args, report) => {
      if (cache.enableNonSslPort === true) report("Azure Cache for Redis must not enable the non-TLS port.");
      if (cache.minimumTlsVersion !== undefined && cache.minimumTlsVersion !== "1.2") {
        report("Azure Cache for Redis must set minimumTlsVersion: 1.2.");
      }
    }),
    validateResourceOfType(redisenterprise.Database, (db, _args, report) => {
      if (db.clientProtocol === "Plaintext")
        report("Azure Managed Redis databases must use clientProtocol: Encrypted.");
    }),
    validateResourceOfType(gcpRedis.Instance, (instance, _args, report) => {
      if (instance.transitEncryptionMode !== "SERVER_AUTHENTICATION") {
        report("Memorystore must set transitEncryptionMode: SERVER_AUTHENTICATION.");
      }
    }),
  ],
};

export const redisAuth: ResourceValidationPolicy = {
  name: "redis-auth",
  description:
    "Redis requires authentication. (Azure Managed Redis always does: access keys or Microsoft Entra ID.)",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(elasticache.ReplicationGroup, (group, _args, report) => {
      const hasToken = Boolean(group.authToken) || Boolean(group.authTokenWo);
      const hasRbac = (group.userGroupIds ?? []).length > 0;
      if (!hasToken && !hasRbac) report("ElastiCache must set authToken (AUTH) or userGroupIds (RBAC).");
    }),
    validateResourceOfType(redis.Redis, (cache, _args, report) => {
      if (String(cache.redisConfiguration?.authnotrequired ?? "").toLowerCase() === "true") {
        report("Azure Cache for Redis must not set redisConfiguration.authnotrequired.");
      }
    }),
    validateResourceOfType(gcpRedis.Instance, (instance, _args, report) => {
      if (instance.authEnabled !== true) report("Memorystore must set authEnabled: true.");
    }),
  ],
};

export const redisPolicies: ResourceValidationPolicy[] = [redisHighAvailability, redisTls, redisAuth];
