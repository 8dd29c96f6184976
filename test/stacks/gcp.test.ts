/** Pulumi.gcp.yaml + Pulumi.yaml defaults, run under recording mocks: HA, privacy, encryption, protect, wiring. */
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
  r = await run({ stack: "gcp" });
});

describe("gcp stack", () => {
  it("creates a custom VPC with GKE secondary ranges, Cloud NAT and private services access", () => {
    const net = one(r, "gcp:compute/network:Network");
    expect(net.inputs.autoCreateSubnetworks).toBe(false);
    const sub = one(r, "gcp:compute/subnetwork:Subnetwork");
    expect(sub.inputs).toMatchObject({
      network: net.id,
      ipCidrRange: "10.42.0.0/20",
      privateIpGoogleAccess: true,
    });
    expect(at(sub.inputs, "secondaryIpRanges").map((x: any) => x.rangeName)).toEqual(["pods", "services"]);
    const range = one(r, "gcp:compute/globalAddress:GlobalAddress");
    expect(range.inputs).toMatchObject({ purpose: "VPC_PEERING", addressType: "INTERNAL", network: net.id });
    const psa = one(r, "gcp:servicenetworking/connection:Connection");
    expect(psa.inputs).toMatchObject({
      network: net.id,
      service: "servicenetworking.googleapis.com",
      reservedPeeringRanges: [range.outputs.name],
    });
    expect(one(r, "gcp:compute/routerNat:RouterNat").inputs.sourceSubnetworkIpRangesToNat).toBe(
      "ALL_SUBNETWORKS_ALL_IP_RANGES",
    );
  });

  it("runs a regional GKE cluster with private nodes in three zones and the Filestore CSI driver", () => {
    const gke = one(r, "gcp:container/cluster:Cluster");
    expect(gke.inputs).toMatchObject({
      location: "europe-west1",
      nodeLocations: ["europe-west1-b", "europe-west1-c", "europe-west1-d"],
      removeDefaultNodePool: true,
      datapathProvider: "ADVANCED_DATAPATH",
      addonsConfig: { gcpFilestoreCsiDriverConfig: { enabled: true } },
      workloadIdentityConfig: { workloadPool: "acme-llm-proxy-prod.svc.id.goog" },
    });
    expect(at(gke.inputs, "privateClusterConfig.enablePrivateNodes")).toBe(true);
    const pool = one(r, "gcp:container/nodePool:NodePool");
    expect(pool.inputs).toMatchObject({
      cluster: gke.outputs.name,
      autoscaling: { minNodeCount: 1, maxNodeCount: 4 },
      nodeConfig: { machineType: "n2-standard-4" },
    });
    expect(r.outputs.kubeconfig).toContain(`https://${String(gke.outputs.endpoint)}`);
  });

  it("makes Cloud SQL REGIONAL with private IP only, TLS only, PITR backups, deletion protection and protect", () => {
    const sql = one(r, "gcp:sql/databaseInstance:DatabaseInstance");
    const psa = one(r, "gcp:servicenetworking/connection:Connection");
    expect(sql.inputs.databaseVersion).toBe("POSTGRES_16");
    expect(sql.inputs.deletionProtection).toBe(true);
    expect(sql.inputs.settings).toMatchObject({
      tier: "db-custom-4-15360",
      edition: "ENTERPRISE",
      availabilityType: "REGIONAL",
      deletionProtectionEnabled: true,
      backupConfiguration: {
        enabled: true,
        pointInTimeRecoveryEnabled: true,
        // Cloud SQL needs fewer days of logs than backups kept; 7 is its most.
        transactionLogRetentionDays: 7,
        backupRetentionSettings: { retainedBackups: 14, retentionUnit: "COUNT" },
      },
      ipConfiguration: {
        ipv4Enabled: false,
        privateNetwork: one(r, "gcp:compute/network:Network").id,
        sslMode: "ENCRYPTED_ONLY",
      },
    });
    expect(sql.options.dependencies).toContain(psa.urn);
    expect(sql.options.protect).toBe(true);
    expect(one(r, "gcp:sql/database:Database").options.protect).toBe(true);
    expect(isSecretInput(one(r, "gcp:sql/user:User"), "password")).toBe(true);
  });

  it("makes Memorystore STANDARD_HA with AUTH and TLS over private services access", () => {
    const redis = one(r, "gcp:redis/instance:Instance");
    expect(redis.inputs).toMatchObject({
      tier: "STANDARD_HA",
      memorySizeGb: 5,
      authEnabled: true,
      transitEncryptionMode: "SERVER_AUTHENTICATION",
      connectMode: "PRIVATE_SERVICE_ACCESS",
      locationId: "europe-west1-b",
      alternativeLocationId: "europe-west1-c",
    });
  });

  it("makes Filestore REGIONAL on private services access, and static NFS PVs bound to the app's claims", () => {
    const fsi = one(r, "gcp:filestore/instance:Instance");
    expect(fsi.inputs.tier).toBe("REGIONAL");
    expect(fsi.inputs.location).toBe("europe-west1");
    expect(at(fsi.inputs, "networks")[0]).toMatchObject({
      connectMode: "PRIVATE_SERVICE_ACCESS",
      modes: ["MODE_IPV4"],
    });
    expect(at(fsi.inputs, "fileShares.nfsExportOptions")[0].ipRanges).toEqual(["10.42.0.0/16"]);
    expect(fsi.options.protect).toBe(true);
    const ip = at(fsi.outputs, "networks")[0].ipAddresses[0];
    const sc = one(r, K8S.storageClass);
    const pvs = all(r, K8S.pv);
    expect(pvs).toHaveLength(2);
    for (const pv of pvs) {
      expect(at(pv.inputs, "spec.nfs")).toEqual({ server: ip, path: "/llmproxy" });
      expect(at(pv.inputs, "spec.storageClassName")).toBe(at(sc.outputs, "metadata.name"));
      expect(at(pv.inputs, "spec.persistentVolumeReclaimPolicy")).toBe("Retain");
      const claimName = at(pv.inputs, "spec.claimRef.name");
      const pvc = all(r, K8S.pvc).find((c) => at(c.outputs, "metadata.name") === claimName);
      expect(pvc, `claim ${claimName}`).toBeDefined();
      expect(at(pvc!.inputs, "spec.volumeName")).toBe(at(pv.outputs, "metadata.name"));
    }
  });

  it("wires the app to the recorded database, Redis (with its CA) and storage outputs", () => {
    const sql = one(r, "gcp:sql/databaseInstance:DatabaseInstance");
    const redis = one(r, "gcp:redis/instance:Instance");
    const user = one(r, "gcp:sql/user:User");
    assertAppWiring(r, {
      dbHost: sql.outputs.privateIpAddress as string,
      dbPort: 5432,
      dbUser: user.inputs.name as string,
      dbName: one(r, "gcp:sql/database:Database").inputs.name as string,
      dbPassword: user.inputs.password as string,
      redisHost: redis.outputs.host as string,
      redisPort: redis.outputs.port as number,
      redisToken: redis.outputs.authString as string,
      // Cloud SQL's own CA; its certificate does not name the private IP, so the chain is what is verified.
      dbSslMode: "verify-ca",
      dbCa: (at(sql.outputs, "serverCaCerts") as { cert: string }[]).map((c) => c.cert).join("\n"),
      storageClass: one(r, K8S.storageClass),
    });
    // REDIS_TLS_CA comes from the ConfigMap, which holds Memorystore's server CA.
    const cm = one(r, K8S.configMap);
    const ca = (at(redis.outputs, "serverCaCerts") as { cert: string }[]).map((c) => c.cert).join("\n");
    expect(at(cm.inputs, "data")["redis-ca.pem"]).toBe(ca);
    const env = at(one(r, K8S.deployment, "llm-proxy-deployment").inputs, "spec.template.spec.containers")[0]
      .env;
    expect(env.find((e: any) => e.name === "REDIS_TLS_CA").valueFrom).toEqual({
      configMapKeyRef: { name: at(cm.outputs, "metadata.name"), key: "redis-ca.pem" },
    });
  });

  it("hands the new share's sub-paths to uid 10001 in a one-shot Job the workloads wait for", () => {
    const job = one(r, K8S.job);
    const share = one(r, "gcp:filestore/instance:Instance");
    const pod = at(job.inputs, "spec.template.spec");
    // The export the static PVs point at, mounted directly.
    const pv = all(r, K8S.pv)[0];
    expect(pod.volumes).toEqual([{ name: "share", nfs: at(pv.inputs, "spec.nfs") }]);
    expect(at(pv.inputs, "spec.nfs.server")).toBe(at(share.outputs, "networks")[0].ipAddresses[0]);
    const c = pod.containers[0];
    expect(c.command.join(" ")).toContain(
      "chown 10001:10001 /share/knowledge-base /share/chroma /share/proxy-data",
    );
    // Root with CHOWN only, nothing else.
    expect(c.securityContext).toMatchObject({
      runAsUser: 0,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"], add: ["CHOWN"] },
    });
    // In its own namespace at the baseline standard; the app's namespace stays restricted.
    const jobNs = all(r, K8S.namespace).find(
      (n) => at(n.outputs, "metadata.name") === at(job.inputs, "metadata.namespace"),
    );
    expect(at(jobNs!.inputs, "metadata.labels")).toMatchObject({
      "pod-security.kubernetes.io/enforce": "baseline",
    });
    for (const d of [...all(r, K8S.deployment), ...all(r, K8S.statefulSet)])
      expect(d.options.dependencies, d.name).toContain(job.urn);
    expect(job.options.dependencies).toEqual(expect.arrayContaining([share.urn]));
  });

  it("hardens the workload and spreads it across zones", () => assertWorkloadHardening(r));

  it("produces only Kubernetes objects that validate against the Kubernetes schema", () => {
    expect(validateKubernetesObjects(r)).toBeGreaterThanOrEqual(16);
  });
});
