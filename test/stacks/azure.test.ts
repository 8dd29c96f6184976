/** Pulumi.azure.yaml + Pulumi.yaml defaults, run under recording mocks: HA, privacy, encryption, protect, wiring. */
import { beforeAll, describe, expect, it } from "vitest";
import type { OfflineRunResult } from "../../scripts/offline-run";
import {
  K8S,
  all,
  assertAppWiring,
  assertWorkloadHardening,
  at,
  isSecretInput,
  one,
  run,
  validateKubernetesObjects,
} from "./helpers";

let r: OfflineRunResult;
beforeAll(async () => {
  r = await run({ stack: "azure" });
});

describe("azure stack", () => {
  it("creates a VNet with cluster, PostgreSQL-delegated and private-endpoint subnets", () => {
    const vnet = one(r, "azure-native:network:VirtualNetwork");
    expect(at(vnet.inputs, "addressSpace.addressPrefixes")).toEqual(["10.41.0.0/16"]);
    const subnets = Object.fromEntries(all(r, "azure-native:network:Subnet").map((s) => [s.name, s]));
    expect(subnets["llm-proxy-net-cluster"].inputs.serviceEndpoints).toEqual([
      { service: "Microsoft.Storage" },
    ]);
    expect(subnets["llm-proxy-net-postgres"].inputs.delegations).toEqual([
      { name: "postgres", serviceName: "Microsoft.DBforPostgreSQL/flexibleServers" },
    ]);
    expect(subnets["llm-proxy-net-endpoints"].inputs.addressPrefix).toBe("10.41.17.0/24");
  });

  it("runs AKS with nodes in zones 1-3, Cilium network policy and the Azure Files CSI driver", () => {
    const aks = one(r, "azure-native:containerservice:ManagedCluster");
    const pool = at(aks.inputs, "agentPoolProfiles")[0];
    expect(pool).toMatchObject({
      availabilityZones: ["1", "2", "3"],
      enableAutoScaling: true,
      minCount: 3,
      maxCount: 12,
      vmSize: "Standard_D4ds_v5",
      vnetSubnetID: one(r, "azure-native:network:Subnet", "llm-proxy-net-cluster").id,
    });
    expect(at(aks.inputs, "storageProfile.fileCSIDriver.enabled")).toBe(true);
    expect(at(aks.inputs, "networkProfile.networkPolicy")).toBe("cilium");
    expect(at(aks.inputs, "sku.tier")).toBe("Standard");
    // The kubeconfig comes from the cluster's user credentials, base64-decoded.
    const invoke = r.invokes.find(
      (i) => i.token === "azure-native:containerservice:listManagedClusterUserCredentials",
    );
    expect(invoke?.inputs.resourceName).toBe(aks.outputs.name);
    expect(r.outputs.kubeconfig).toMatch(/^apiVersion: v1/);
  });

  it("makes PostgreSQL Flexible Server zone-redundant, private, TLS-only, backed up, locked and protected", () => {
    const server = one(r, "azure-native:dbforpostgresql:Server");
    expect(server.inputs).toMatchObject({
      version: "16",
      sku: { name: "Standard_D4ds_v5", tier: "GeneralPurpose" },
      highAvailability: { mode: "ZoneRedundant", standbyAvailabilityZone: "2" },
      availabilityZone: "1",
      backup: { backupRetentionDays: 14 },
    });
    const zone = one(r, "azure-native:privatedns:PrivateZone", "llm-proxy-pg-dns");
    expect(zone.inputs.privateZoneName).toMatch(/\.postgres\.database\.azure\.com$/);
    expect(server.inputs.network).toEqual({
      delegatedSubnetResourceId: one(r, "azure-native:network:Subnet", "llm-proxy-net-postgres").id,
      privateDnsZoneArmResourceId: zone.id,
      publicNetworkAccess: "Disabled",
    });
    const link = one(r, "azure-native:privatedns:VirtualNetworkLink", "llm-proxy-pg-dns-link");
    expect(server.options.dependencies).toContain(link.urn);
    expect(server.options.protect).toBe(true);
    expect(one(r, "azure-native:dbforpostgresql:Database").options.protect).toBe(true);
    expect(isSecretInput(server, "administratorLoginPassword")).toBe(true);
    const tls = one(r, "azure-native:dbforpostgresql:Configuration");
    expect(tls.inputs).toMatchObject({ configurationName: "require_secure_transport", value: "on" });
    const lock = one(r, "azure-native:authorization:ManagementLockByScope");
    expect(lock.inputs).toMatchObject({ scope: server.id, level: "CanNotDelete" });
  });

  it("makes Managed Redis HA, TLS 1.2, non-clustered and reachable only through a private endpoint", () => {
    const cluster = one(r, "azure-native:redisenterprise:RedisEnterprise");
    expect(cluster.inputs).toMatchObject({
      sku: { name: "Balanced_B5" },
      highAvailability: "Enabled",
      minimumTlsVersion: "1.2",
      publicNetworkAccess: "Disabled",
    });
    const db = one(r, "azure-native:redisenterprise:Database");
    expect(db.inputs).toMatchObject({
      clientProtocol: "Encrypted",
      clusteringPolicy: "NoCluster",
      port: 10000,
    });
    const pe = one(r, "azure-native:network:PrivateEndpoint");
    expect(pe.inputs.privateLinkServiceConnections).toEqual([
      expect.objectContaining({ privateLinkServiceId: cluster.id, groupIds: ["redisEnterprise"] }),
    ]);
    expect(at(pe.inputs, "subnet.id")).toBe(
      one(r, "azure-native:network:Subnet", "llm-proxy-net-endpoints").id,
    );
  });

  it("puts Azure Files NFS on a Premium_ZRS FileStorage account reachable only from the cluster subnet", () => {
    const account = one(r, "azure-native:storage:StorageAccount");
    expect(account.inputs).toMatchObject({ kind: "FileStorage", sku: { name: "Premium_ZRS" } });
    expect(at(account.inputs, "networkRuleSet.defaultAction")).toBe("Deny");
    expect(at(account.inputs, "networkRuleSet.virtualNetworkRules")).toEqual([
      { virtualNetworkResourceId: one(r, "azure-native:network:Subnet", "llm-proxy-net-cluster").id },
    ]);
    expect(account.options.protect).toBe(true);
    const sc = one(r, K8S.storageClass);
    expect(sc.inputs.provisioner).toBe("file.csi.azure.com");
    expect(sc.inputs.parameters).toEqual({
      protocol: "nfs",
      skuName: "Premium_ZRS",
      storageAccount: account.outputs.name,
      resourceGroup: one(r, "azure-native:resources:ResourceGroup").outputs.name,
    });
    // The cluster identity may create shares in the account.
    const role = one(r, "azure-native:authorization:RoleAssignment", "llm-proxy-fs-csi-role");
    expect(role.inputs.scope).toBe(account.id);
    expect(role.inputs.principalId).toBe(
      at(one(r, "azure-native:containerservice:ManagedCluster").outputs, "identity.principalId"),
    );
    expect(r.outputs.filesystemId).toBe(account.id);
  });

  it("wires the app to the recorded database, Redis and storage outputs", () => {
    const server = one(r, "azure-native:dbforpostgresql:Server");
    const cluster = one(r, "azure-native:redisenterprise:RedisEnterprise");
    const keys = r.invokes.find((i) => i.token === "azure-native:redisenterprise:listDatabaseKeys");
    expect(keys).toBeDefined();
    const token = (one(r, K8S.secret).inputs.stringData as Record<string, string>).REDIS_URL;
    const primaryKey = decodeURIComponent(token.slice("rediss://:".length, token.lastIndexOf("@")));
    expect(primaryKey).toHaveLength(44);
    assertAppWiring(r, {
      dbHost: server.outputs.fullyQualifiedDomainName as string,
      dbPort: 5432,
      dbUser: server.inputs.administratorLogin as string,
      dbName: one(r, "azure-native:dbforpostgresql:Database").inputs.databaseName as string,
      dbPassword: server.inputs.administratorLoginPassword as string,
      redisHost: cluster.outputs.hostName as string,
      redisPort: 10000,
      redisToken: primaryKey,
      // Publicly trusted chain, certificate names the server's FQDN: full verification, no CA to ship.
      dbSslMode: "verify-full",
      dbCa: null,
      storageClass: one(r, K8S.storageClass),
    });
  });

  it("needs no volume-ownership Job (the platform's volumes are writable for uid 10001)", () => {
    expect(all(r, K8S.job)).toEqual([]);
  });

  it("hardens the workload and spreads it across zones", () => assertWorkloadHardening(r));

  it("produces only Kubernetes objects that validate against the Kubernetes schema", () => {
    expect(validateKubernetesObjects(r)).toBeGreaterThanOrEqual(14);
  });
});
