/**
 * GKE: a regional cluster (control plane and nodes in every zone of the region) with private nodes,
 * Dataplane V2 (network policy), workload identity and the Filestore CSI driver. Or an existing cluster.
 */
import * as gcp from "@pulumi/gcp";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { GKE_MASTER_CIDR, type ClusterSettings } from "../config";
import { GKE_PODS_RANGE, GKE_SERVICES_RANGE } from "./network";

export interface GcpClusterArgs {
  settings: ClusterSettings;
  project: string;
  region: string;
  /** Node zones; empty = GKE's default zones of the region. */
  zones: string[];
  networkId: pulumi.Input<string>;
  subnetworkId: pulumi.Input<string>;
}

/** Kubeconfig using gke-gcloud-auth-plugin (must be installed where `pulumi` runs). */
export function gkeKubeconfig(name: string, endpoint: string, caData: string): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name, cluster: { server: `https://${endpoint}`, "certificate-authority-data": caData } }],
    contexts: [{ name, context: { cluster: name, user: name } }],
    "current-context": name,
    users: [
      {
        name,
        user: {
          exec: {
            apiVersion: "client.authentication.k8s.io/v1beta1",
            command: "gke-gcloud-auth-plugin",
            installHint: "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
            provideClusterInfo: true,
          },
        },
      },
    ],
  });
}

export class GcpCluster extends pulumi.ComponentResource {
  readonly clusterName: pulumi.Output<string>;
  readonly kubeconfig: pulumi.Output<string>;
  readonly provider: k8s.Provider;

  constructor(name: string, args: GcpClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:gcp:Cluster", name, {}, opts);
    const child = { parent: this };
    const s = args.settings;

    if (s.existingKubeconfig) {
      this.kubeconfig = pulumi.secret(s.existingKubeconfig);
      this.provider = new k8s.Provider(`${name}-k8s`, { kubeconfig: this.kubeconfig }, child);
      this.clusterName = pulumi.output("existing");
      this.registerOutputs({ clusterName: this.clusterName });
      return;
    }

    const nodeLocations = args.zones.length > 0 ? { nodeLocations: args.zones } : {};
    const cluster = new gcp.container.Cluster(
      `${name}-gke`,
      {
        project: args.project,
        location: args.region,
        ...nodeLocations,
        network: args.networkId,
        subnetwork: args.subnetworkId,
        minMasterVersion: s.kubernetesVersion,
        releaseChannel: { channel: "REGULAR" },
        removeDefaultNodePool: true,
        initialNodeCount: 1,
        deletionProtection: true,
        ipAllocationPolicy: {
          clusterSecondaryRangeName: GKE_PODS_RANGE,
          servicesSecondaryRangeName: GKE_SERVICES_RANGE,
        },
        privateClusterConfig: {
          enablePrivateNodes: true,
          enablePrivateEndpoint: false,
          masterIpv4CidrBlock: GKE_MASTER_CIDR,
        },
        masterAuthorizedNetworksConfig: {
          cidrBlocks: s.apiAllowedCidrs.map((cidrBlock) => ({ cidrBlock, displayName: cidrBlock })),
        },
        datapathProvider: "ADVANCED_DATAPATH",
        addonsConfig: { gcpFilestoreCsiDriverConfig: { enabled: true } },
        workloadIdentityConfig: { workloadPool: `${args.project}.svc.id.goog` },
      },
      child,
    );
    // Autoscaling pool: min/max per zone, so nodes exist in every zone.
    const pool = new gcp.container.NodePool(
      `${name}-pool`,
      {
        project: args.project,
        cluster: cluster.name,
        location: args.region,
        ...nodeLocations,
        initialNodeCount: s.nodeMinCount,
        autoscaling: { minNodeCount: s.nodeMinCount, maxNodeCount: s.nodeMaxCount },
        management: { autoRepair: true, autoUpgrade: true },
        nodeConfig: {
          machineType: s.nodeSize,
          oauthScopes: ["https://www.googleapis.com/auth/cloud-platform"],
          workloadMetadataConfig: { mode: "GKE_METADATA" },
          shieldedInstanceConfig: { enableSecureBoot: true, enableIntegrityMonitoring: true },
        },
      },
      { ...child, ignoreChanges: ["initialNodeCount"] },
    );

    this.kubeconfig = pulumi.secret(
      pulumi
        .all([cluster.name, cluster.endpoint, cluster.masterAuth])
        .apply(([n, endpoint, auth]) => gkeKubeconfig(n, endpoint, auth.clusterCaCertificate ?? "")),
    );
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig, enableServerSideApply: true },
      { ...child, dependsOn: [pool] },
    );
    this.clusterName = cluster.name;
    this.registerOutputs({ clusterName: this.clusterName, kubeconfig: this.kubeconfig });
  }
}
