/**
 * Azure Database for PostgreSQL Flexible Server: ZoneRedundant HA, private access only (delegated subnet +
 * private DNS zone), TLS required, backups kept, a CanNotDelete lock and `protect: true`.
 */
import * as authorization from "@pulumi/azure-native/authorization";
import * as dbforpostgresql from "@pulumi/azure-native/dbforpostgresql";
import * as privatedns from "@pulumi/azure-native/privatedns";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { azurePostgresTier, type PostgresSettings } from "../config";

export interface AzurePostgresArgs {
  settings: PostgresSettings;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  /** Primary and standby zones. */
  zones: string[];
  vnetId: pulumi.Input<string>;
  /** Subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers. */
  delegatedSubnetId: pulumi.Input<string>;
  tags: Record<string, string>;
}

export const AZURE_DB_USER = "llmproxy";
export const AZURE_DB_NAME = "llmproxy";

/** HA block: ZoneRedundant with the standby in the second zone, or Disabled. */
export function azurePostgresHa(ha: boolean, zones: string[]) {
  return ha
    ? {
        mode: dbforpostgresql.PostgreSqlFlexibleServerHighAvailabilityMode.ZoneRedundant,
        ...(zones.length > 1 ? { standbyAvailabilityZone: zones[1] } : {}),
      }
    : { mode: dbforpostgresql.PostgreSqlFlexibleServerHighAvailabilityMode.Disabled };
}

/**
 * The `sku` block: the tier follows from the SKU name (the API rejects a mismatch). Config validation has already
 * rejected names that are none of Burstable / GeneralPurpose / MemoryOptimized.
 */
export function azurePostgresSku(size: string): { name: string; tier: dbforpostgresql.SkuTier } {
  const tier = azurePostgresTier(size);
  if (!tier)
    throw new Error(`"${size}" is not a Flexible Server SKU name (Standard_B*, Standard_D*, Standard_E*).`);
  return { name: size, tier: dbforpostgresql.SkuTier[tier] };
}

export class AzurePostgres extends pulumi.ComponentResource {
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly password: pulumi.Output<string>;
  readonly server: dbforpostgresql.Server;
  readonly resources: pulumi.Resource[];

  constructor(name: string, args: AzurePostgresArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:azure:Postgres", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    // Private DNS zone linked to the VNet; the server registers its private address there.
    const zone = new privatedns.PrivateZone(
      `${name}-dns`,
      {
        resourceGroupName: args.resourceGroupName,
        privateZoneName: `${name}.private.postgres.database.azure.com`,
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

    // Azure requires characters from three of the four classes (upper, lower, digits, symbols): one of each of
    // the first three, always. Adding these to an existing stack would replace its password (every argument of a
    // RandomPassword forces a new one) and so rotate a working server's password: existing stacks keep theirs
    // (README, Upgrades and rollback, for one whose first `pulumi up` failed on it).
    const password = new random.RandomPassword(
      `${name}-password`,
      { length: 32, special: false, minUpper: 1, minLower: 1, minNumeric: 1 },
      { ...child, ignoreChanges: ["minUpper", "minLower", "minNumeric"] },
    );

    this.server = new dbforpostgresql.Server(
      `${name}-server`,
      {
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        version: s.version,
        sku: azurePostgresSku(s.size),
        storage: { storageSizeGB: s.storageGb, autoGrow: dbforpostgresql.StorageAutoGrow.Enabled },
        backup: {
          backupRetentionDays: s.backupDays,
          geoRedundantBackup: dbforpostgresql.GeographicallyRedundantBackup.Disabled,
        },
        highAvailability: azurePostgresHa(s.ha, args.zones),
        ...(args.zones.length > 0 ? { availabilityZone: args.zones[0] } : {}),
        network: {
          delegatedSubnetResourceId: args.delegatedSubnetId,
          privateDnsZoneArmResourceId: zone.id,
          publicNetworkAccess: dbforpostgresql.ServerPublicNetworkAccessState.Disabled,
        },
        // Encrypted at rest always: Flexible Server uses service-managed keys unless a CMK is configured.
        authConfig: {
          passwordAuth: dbforpostgresql.PasswordBasedAuth.Enabled,
          activeDirectoryAuth: dbforpostgresql.MicrosoftEntraAuth.Disabled,
        },
        administratorLogin: AZURE_DB_USER,
        administratorLoginPassword: pulumi.secret(password.result),
        tags: args.tags,
      },
      {
        ...child,
        dependsOn: [link],
        protect: true,
        ignoreChanges: ["availabilityZone", "highAvailability.standbyAvailabilityZone"],
      },
    );

    // The server applies one change at a time (a second one fails with ServerIsBusy), so the TLS setting, the
    // database and the lock go one after another.
    // TLS is required (the default, pinned here so nobody turns it off).
    const tls = new dbforpostgresql.Configuration(
      `${name}-require-tls`,
      {
        resourceGroupName: args.resourceGroupName,
        serverName: this.server.name,
        configurationName: "require_secure_transport",
        value: "on",
        source: "user-override",
      },
      child,
    );
    const db = new dbforpostgresql.Database(
      `${name}-database`,
      {
        resourceGroupName: args.resourceGroupName,
        serverName: this.server.name,
        databaseName: AZURE_DB_NAME,
        charset: "UTF8",
        collation: "en_US.utf8",
      },
      { ...child, protect: true, dependsOn: [tls] },
    );
    // Deletion protection on the Azure side: nobody deletes the server without removing the lock first.
    new authorization.ManagementLockByScope(
      `${name}-lock`,
      { scope: this.server.id, level: authorization.LockLevel.CanNotDelete, notes: "llm-proxy database" },
      { ...child, dependsOn: [db] },
    );

    this.host = this.server.fullyQualifiedDomainName.apply((h) => h ?? "");
    this.port = pulumi.output(5432);
    this.password = pulumi.secret(password.result);
    this.resources = [this.server, tls, db];
    this.registerOutputs({ host: this.host });
  }
}
