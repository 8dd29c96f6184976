/**
 * GCP network: a custom-mode VPC, one regional subnetwork with secondary ranges for GKE pods and services,
 * Cloud NAT for private nodes, and the private services access range + peering Cloud SQL, Memorystore and
 * Filestore use. Or an existing network and subnetwork (the PSA range and peering are still created).
 */
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { subBlock } from "../cidr";

export interface GcpNetworkArgs {
  /** Primary range of the created network, a /16 or larger. */
  cidr: string;
  region: string;
  project: string;
  /** Existing network self link and [subnetwork self link]. */
  existing?: { networkId: string; subnetIds: string[] };
}

/** Ranges: nodes /20, services /20 after it, pods in the upper /17. */
export function gcpSubnetPlan(cidr: string): { nodes: string; services: string; pods: string } {
  return { nodes: subBlock(cidr, 20, 0), services: subBlock(cidr, 20, 1), pods: subBlock(cidr, 17, 1) };
}

/** The network name (last segment) of a network self link or id. */
export function networkName(selfLinkOrId: string): string {
  return selfLinkOrId.split("/").pop() ?? selfLinkOrId;
}

export const GKE_PODS_RANGE = "pods";
export const GKE_SERVICES_RANGE = "services";

export class GcpNetwork extends pulumi.ComponentResource {
  /** Network id (projects/…/global/networks/…). */
  readonly networkId: pulumi.Output<string>;
  readonly networkName: pulumi.Output<string>;
  readonly subnetworkId: pulumi.Output<string>;
  /** Name of the private services access range. */
  readonly psaRangeName: pulumi.Output<string>;
  /** The peering every private managed service waits for. */
  readonly psaConnection: gcp.servicenetworking.Connection;
  /** Ranges that reach the data services (nodes and pods). */
  readonly clientRanges: string[];

  constructor(name: string, args: GcpNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:gcp:Network", name, {}, opts);
    const child = { parent: this };
    const plan = gcpSubnetPlan(args.cidr);

    let networkId: pulumi.Output<string>;
    if (args.existing) {
      networkId = pulumi.output(args.existing.networkId);
      this.subnetworkId = pulumi.output(args.existing.subnetIds[0]);
      this.networkName = pulumi.output(networkName(args.existing.networkId));
    } else {
      const vpc = new gcp.compute.Network(
        `${name}-vpc`,
        { project: args.project, autoCreateSubnetworks: false, routingMode: "REGIONAL" },
        child,
      );
      const subnet = new gcp.compute.Subnetwork(
        `${name}-nodes`,
        {
          project: args.project,
          region: args.region,
          network: vpc.id,
          ipCidrRange: plan.nodes,
          privateIpGoogleAccess: true,
          secondaryIpRanges: [
            { rangeName: GKE_PODS_RANGE, ipCidrRange: plan.pods },
            { rangeName: GKE_SERVICES_RANGE, ipCidrRange: plan.services },
          ],
        },
        child,
      );
      // Egress for private nodes (image pulls, LLM providers).
      const router = new gcp.compute.Router(
        `${name}-router`,
        { project: args.project, region: args.region, network: vpc.id },
        child,
      );
      new gcp.compute.RouterNat(
        `${name}-nat`,
        {
          project: args.project,
          region: args.region,
          router: router.name,
          natIpAllocateOption: "AUTO_ONLY",
          sourceSubnetworkIpRangesToNat: "ALL_SUBNETWORKS_ALL_IP_RANGES",
        },
        child,
      );
      networkId = vpc.id;
      this.subnetworkId = subnet.id;
      this.networkName = vpc.name;
    }

    // Private services access: one allocated range peered with Google's service producer network.
    const range = new gcp.compute.GlobalAddress(
      `${name}-psa`,
      {
        project: args.project,
        network: networkId,
        purpose: "VPC_PEERING",
        addressType: "INTERNAL",
        prefixLength: 16,
      },
      child,
    );
    this.psaConnection = new gcp.servicenetworking.Connection(
      `${name}-psa`,
      {
        network: networkId,
        service: "servicenetworking.googleapis.com",
        reservedPeeringRanges: [range.name],
      },
      child,
    );
    this.networkId = networkId;
    this.psaRangeName = range.name;
    this.clientRanges = [args.cidr];
    this.registerOutputs({ networkId: this.networkId, subnetworkId: this.subnetworkId });
  }
}
