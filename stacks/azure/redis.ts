/**
 * Azure Managed Redis (redisenterprise), reached through a private endpoint only.
 *
 * Why Managed Redis rather than Azure Cache for Redis Premium: Microsoft is retiring Azure Cache for Redis in
 * favour of Azure Managed Redis; Managed Redis is zone-redundant with `highAvailability: Enabled` on every SKU
 * and needs no Premium tier for private networking. The database uses the `NoCluster` policy so the proxy's
 * plain (non-cluster) ioredis client and its multi-key Lua scripts work unchanged.
 */
import * as network from "@pulumi/azure-native/network";
import * as privatedns from "@pulumi/azure-native/privatedns";
import * as redisenterprise from "@pulumi/azure-native/redisenterprise";
import * as pulumi from "@pulumi/pulumi";
import type { RedisSettings } from "../config";

export interface AzureRedisArgs {
  settings: RedisSettings;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  vnetId: pulumi.Input<string>;
  /** Subnet for the private endpoint. */
  endpointSubnetId: pulumi.Input<string>;
  tags: Record<string, string>;
}

/** Port of an Azure Managed Redis database (TLS). */
export const AZURE_REDIS_PORT = 10000;

export class AzureRedis extends pulumi.ComponentResource {
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly authToken: pulumi.Output<string>;
  readonly resources: pulumi.Resource[];

  constructor(name: string, args: AzureRedisArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:azure:Redis", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    const cluster = new redisenterprise.RedisEnterprise(
      `${name}-cluster`,
      {
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        sku: { name: s.size },
        highAvailability: s.ha
          ? redisenterprise.HighAvailability.Enabled
          : redisenterprise.HighAvailability.Disabled,
        minimumTlsVersion: redisenterprise.TlsVersion.TlsVersion_1_2,
        publicNetworkAccess: redisenterprise.PublicNetworkAccess.Disabled,
        tags: args.tags,
      },
      child,
    );
    const database = new redisenterprise.Database(
      `${name}-db`,
      {
        resourceGroupName: args.resourceGroupName,
        clusterName: cluster.name,
        databaseName: "default",
        clientProtocol: redisenterprise.Protocol.Encrypted,
        port: AZURE_REDIS_PORT,
        clusteringPolicy: redisenterprise.ClusteringPolicy.NoCluster,
        evictionPolicy: redisenterprise.EvictionPolicy.VolatileLRU,
        accessKeysAuthentication: redisenterprise.AccessKeysAuthentication.Enabled,
      },
      child,
    );

    // Private endpoint + privatelink DNS so the host name resolves to a VNet address.
    const zone = new privatedns.PrivateZone(
      `${name}-dns`,
      {
        resourceGroupName: args.resourceGroupName,
        privateZoneName: "privatelink.redis.azure.net",
        location: "global",
        tags: args.tags,
      },
      child,
    );
    const link = new privatedns.VirtualNetworkLink(
      `${name}-dns-link`,
      {
        resourceGroupName: args.resourceGroupName,
        privateZoneName: zone.name,
        location: "global",
        virtualNetwork: { id: args.vnetId },
        registrationEnabled: false,
      },
      child,
    );
    const endpoint = new network.PrivateEndpoint(
      `${name}-pe`,
      {
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        subnet: { id: args.endpointSubnetId },
        privateLinkServiceConnections: [
          { name: `${name}-plsc`, privateLinkServiceId: cluster.id, groupIds: ["redisEnterprise"] },
        ],
        tags: args.tags,
      },
      { ...child, dependsOn: [database] },
    );
    const dnsGroup = new network.PrivateDnsZoneGroup(
      `${name}-pe-dns`,
      {
        resourceGroupName: args.resourceGroupName,
        privateEndpointName: endpoint.name,
        privateDnsZoneConfigs: [{ name: "redis", privateDnsZoneId: zone.id }],
      },
      child,
    );

    const keys = redisenterprise.listDatabaseKeysOutput(
      { resourceGroupName: args.resourceGroupName, clusterName: cluster.name, databaseName: database.name },
      child,
    );
    this.host = cluster.hostName;
    this.port = database.port.apply((p) => p ?? AZURE_REDIS_PORT);
    this.authToken = pulumi.secret(keys.primaryKey);
    // The link too: until the zone is linked to the VNet the host name resolves to the public address, which
    // refuses connections (public network access is disabled).
    this.resources = [database, endpoint, dnsGroup, link];
    this.registerOutputs({ host: this.host, port: this.port });
  }
}
