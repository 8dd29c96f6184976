/** Memorystore for Redis STANDARD_HA: replica in another zone, AUTH, TLS (server CA handed to the proxy). */
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { RedisSettings } from "../config";

export interface GcpRedisArgs {
  settings: RedisSettings;
  project: string;
  region: string;
  /** Primary and alternative zones; empty = let Memorystore choose. */
  zones: string[];
  networkId: pulumi.Input<string>;
  psaRangeName: pulumi.Input<string>;
  psaConnection: pulumi.Resource;
}

export class GcpRedis extends pulumi.ComponentResource {
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly authToken: pulumi.Output<string>;
  /** PEM of the server CA (REDIS_TLS_CA). */
  readonly tlsCa: pulumi.Output<string>;
  readonly instance: gcp.redis.Instance;

  constructor(name: string, args: GcpRedisArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:gcp:Redis", name, {}, opts);
    const s = args.settings;
    const zones =
      args.zones.length >= 2 ? { locationId: args.zones[0], alternativeLocationId: args.zones[1] } : {};
    this.instance = new gcp.redis.Instance(
      `${name}-redis`,
      {
        project: args.project,
        region: args.region,
        ...zones,
        tier: s.ha ? "STANDARD_HA" : "BASIC",
        memorySizeGb: s.memoryGb,
        redisVersion: "REDIS_7_2",
        authEnabled: true,
        transitEncryptionMode: "SERVER_AUTHENTICATION",
        connectMode: "PRIVATE_SERVICE_ACCESS",
        authorizedNetwork: args.networkId,
        reservedIpRange: args.psaRangeName,
        persistenceConfig: { persistenceMode: "RDB", rdbSnapshotPeriod: "TWELVE_HOURS" },
        maintenancePolicy: {
          weeklyMaintenanceWindows: [{ day: "SUNDAY", startTime: { hours: 3, minutes: 0 } }],
        },
      },
      { parent: this, dependsOn: [args.psaConnection] },
    );
    this.host = this.instance.host;
    this.port = this.instance.port;
    this.authToken = pulumi.secret(this.instance.authString);
    this.tlsCa = this.instance.serverCaCerts.apply((certs) => certs.map((c) => c.cert).join("\n"));
    this.registerOutputs({ host: this.host, port: this.port });
  }
}
