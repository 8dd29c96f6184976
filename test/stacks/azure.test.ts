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

  it("runs AKS with one autoscaled user pool per zone, a tainted system pool, Cilium and the Azure Files CSI driver", () => {
    const aks = one(r, "azure-native:containerservice:ManagedCluster");
    const subnetId = one(r, "azure-native:network:Subnet", "llm-proxy-net-cluster").id;
    // The system pool AKS requires: small, across the zones, tainted so the workloads go to the zonal pools.
    const system = at(aks.inputs, "agentPoolProfiles");
    expect(system).toHaveLength(1);
    expect(system[0]).toMatchObject({
      name: "system",
      mode: "System",
      availabilityZones: ["1", "2", "3"],
      enableAutoScaling: true,
      minCount: 2,
      maxCount: 3,
      nodeTaints: ["CriticalAddonsOnly=true:NoSchedule"],
      vnetSubnetID: subnetId,
    });
    expect(aks.options.ignoreChanges).toEqual(["agentPoolProfiles[0].count"]);
    // One user pool per zone (the Cluster Autoscaler's advice for zone-aware scale-up with a DoNotSchedule zone
    // spread): nodeMinCount 3 split 1 each, each may grow to nodeMaxCount, the autoscaler balancing them.
    const pools = all(r, "azure-native:containerservice:AgentPool");
    expect(pools.map((p) => [p.inputs.agentPoolName, p.inputs.availabilityZones])).toEqual([
      ["user1", ["1"]],
      ["user2", ["2"]],
      ["user3", ["3"]],
    ]);
    for (const p of pools) {
      expect(p.inputs, p.name).toMatchObject({
        resourceName: aks.outputs.name,
        mode: "User",
        enableAutoScaling: true,
        count: 1,
        minCount: 1,
        maxCount: 12,
        vmSize: "Standard_D4ds_v5",
        vnetSubnetID: subnetId,
      });
      expect(p.inputs.nodeTaints, p.name).toBeUndefined();
      // The autoscaler owns the count.
      expect(p.options.ignoreChanges, p.name).toEqual(["count"]);
    }
    expect(at(aks.inputs, "autoScalerProfile.balanceSimilarNodeGroups")).toBe("true");
    // Kubernetes objects are created once the user pools exist.
    expect(one(r, K8S.provider).options.dependencies).toEqual(
      expect.arrayContaining(pools.map((p) => p.urn)),
    );
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
    // Premium SSD size from the stack file (Azure accepts only fixed sizes).
    expect(at(server.inputs, "storage.storageSizeGB")).toBe(256);
  });

  it("changes the PostgreSQL server one operation at a time: TLS setting, then database, then lock", () => {
    // The server rejects a second concurrent change (ServerIsBusy), so each waits for the previous one.
    const server = one(r, "azure-native:dbforpostgresql:Server");
    const tls = one(r, "azure-native:dbforpostgresql:Configuration");
    const db = one(r, "azure-native:dbforpostgresql:Database");
    const lock = one(r, "azure-native:authorization:ManagementLockByScope");
    expect(tls.options.dependencies).toContain(server.urn);
    expect(db.options.dependencies).toContain(tls.urn);
    expect(lock.options.dependencies).toContain(db.urn);
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
    // The host name resolves to the endpoint only once its privatelink zone is linked to the VNet: the proxy's
    // Secret (and so its pods) waits for the link as well as for the endpoint and its DNS records.
    const zone = one(r, "azure-native:privatedns:PrivateZone", "llm-proxy-redis-dns");
    const link = one(r, "azure-native:privatedns:VirtualNetworkLink", "llm-proxy-redis-dns-link");
    expect(link.inputs).toMatchObject({
      privateZoneName: zone.outputs.name,
      virtualNetwork: { id: one(r, "azure-native:network:VirtualNetwork").id },
      registrationEnabled: false,
    });
    const secret = one(r, K8S.secret, "llm-proxy-secret");
    for (const waitedFor of [
      link,
      pe,
      one(r, "azure-native:network:PrivateDnsZoneGroup", "llm-proxy-redis-pe-dns"),
      db,
    ]) {
      expect(secret.options.dependencies, waitedFor.name).toContain(waitedFor.urn);
    }
  });

  it("generates a PostgreSQL password Azure accepts: an upper-case letter, a lower-case letter and a digit", () => {
    const password = one(r, "random:index/randomPassword:RandomPassword", "llm-proxy-pg-password");
    expect(password.inputs).toMatchObject({
      length: 32,
      special: false,
      minUpper: 1,
      minLower: 1,
      minNumeric: 1,
    });
    // An existing stack keeps its (accepted) password: these arguments would otherwise replace it.
    expect(password.options.ignoreChanges.sort()).toEqual(["minLower", "minNumeric", "minUpper"]);
    const server = one(r, "azure-native:dbforpostgresql:Server");
    expect(server.inputs.administratorLoginPassword).toBe(password.outputs.result);
  });

  it("puts an NFS share of filesystemSizeGb on a Premium_ZRS FileStorage account reachable only from the cluster subnet", () => {
    const account = one(r, "azure-native:storage:StorageAccount");
    expect(account.inputs).toMatchObject({ kind: "FileStorage", sku: { name: "Premium_ZRS" } });
    expect(at(account.inputs, "networkRuleSet.defaultAction")).toBe("Deny");
    expect(at(account.inputs, "networkRuleSet.virtualNetworkRules")).toEqual([
      { virtualNetworkResourceId: one(r, "azure-native:network:Subnet", "llm-proxy-net-cluster").id },
    ]);
    expect(account.options.protect).toBe(true);
    // The share is Pulumi's, sized by filesystemSizeGb: the CSI driver never provisions (so never rewrites the
    // VNet's subnets), and the quota setting is what is billed.
    const share = one(r, "azure-native:storage:FileShare");
    expect(share.inputs).toMatchObject({
      accountName: account.outputs.name,
      resourceGroupName: one(r, "azure-native:resources:ResourceGroup").outputs.name,
      shareName: "llmproxy",
      enabledProtocols: "NFS",
      rootSquash: "NoRootSquash",
      shareQuota: 1024,
    });
    expect(share.options.protect).toBe(true);
    const sc = one(r, K8S.storageClass);
    expect(sc.inputs.provisioner).toBe("kubernetes.io/no-provisioner");
    expect(sc.inputs.parameters).toBeUndefined();
    // No role for a CSI driver that creates shares: only the subnet role for internal load balancers remains.
    expect(all(r, "azure-native:authorization:RoleAssignment").map((x) => x.name)).toEqual([
      "llm-proxy-cluster-subnet-role",
    ]);
    // Both claims bind to static NFS PVs on that share (NFS 4.1, as Azure Files requires).
    const pvs = all(r, K8S.pv);
    expect(pvs).toHaveLength(2);
    const accountName = account.outputs.name as string;
    for (const pv of pvs) {
      expect(at(pv.inputs, "spec.nfs")).toEqual({
        server: `${accountName}.file.core.windows.net`,
        path: `/${accountName}/llmproxy`,
      });
      expect(at(pv.inputs, "spec.mountOptions")).toEqual(
        expect.arrayContaining(["vers=4", "minorversion=1", "sec=sys"]),
      );
      expect(at(pv.inputs, "spec.storageClassName")).toBe(at(sc.outputs, "metadata.name"));
      expect(pv.options.dependencies).toContain(share.urn);
      const pvc = all(r, K8S.pvc).find(
        (c) => at(c.outputs, "metadata.name") === at(pv.inputs, "spec.claimRef.name"),
      );
      expect(at(pvc!.inputs, "spec.volumeName")).toBe(at(pv.outputs, "metadata.name"));
    }
    expect(r.outputs.filesystemId).toBe(account.id);
  });

  it("wires the app to the recorded database, Redis and storage outputs", () => {
    const server = one(r, "azure-native:dbforpostgresql:Server");
    const cluster = one(r, "azure-native:redisenterprise:RedisEnterprise");
    const keys = r.invokes.find((i) => i.token === "azure-native:redisenterprise:listDatabaseKeys");
    expect(keys).toBeDefined();
    const token = (one(r, K8S.secret, "llm-proxy-secret").inputs.stringData as Record<string, string>)
      .REDIS_URL;
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

  it("hands the new share's sub-paths to uid 10001 in a one-shot Job the workloads wait for", () => {
    const job = one(r, K8S.job);
    const pod = at(job.inputs, "spec.template.spec");
    expect(pod.volumes).toEqual([{ name: "share", nfs: at(all(r, K8S.pv)[0].inputs, "spec.nfs") }]);
    expect(pod.containers[0].command.join(" ")).toContain("chown 10001:10001");
    for (const d of [...all(r, K8S.deployment), ...all(r, K8S.statefulSet)])
      expect(d.options.dependencies, d.name).toContain(job.urn);
    expect(job.options.dependencies).toContain(one(r, "azure-native:storage:FileShare").urn);
  });

  it("hardens the workload and spreads it across zones", () => assertWorkloadHardening(r));

  it("produces only Kubernetes objects that validate against the Kubernetes schema", () => {
    expect(validateKubernetesObjects(r)).toBeGreaterThanOrEqual(14);
  });
});
