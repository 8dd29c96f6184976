/**
 * Azure network: a resource group, a VNet with a cluster subnet (Microsoft.Storage service endpoint for NFS),
 * a subnet delegated to PostgreSQL Flexible Server and one for private endpoints. Or existing subnets.
 */
import * as network from "@pulumi/azure-native/network";
import * as resources from "@pulumi/azure-native/resources";
import * as pulumi from "@pulumi/pulumi";
import { subBlock } from "../cidr";

export interface AzureNetworkArgs {
  /** VNet address space, a /16 or larger. */
  cidr: string;
  location: string;
  /** Existing VNet id and [cluster, postgres-delegated, private-endpoint] subnet ids. */
  existing?: { networkId: string; subnetIds: string[] };
  tags: Record<string, string>;
}

/** Subnet plan: /20 for nodes (pods use the overlay), /24 for PostgreSQL, /24 for private endpoints. */
export function azureSubnetPlan(cidr: string): { cluster: string; postgres: string; endpoints: string } {
  return {
    cluster: subBlock(cidr, 20, 0),
    postgres: subBlock(cidr, 24, 16),
    endpoints: subBlock(cidr, 24, 17),
  };
}

export class AzureNetwork extends pulumi.ComponentResource {
  readonly resourceGroupName: pulumi.Output<string>;
  readonly vnetId: pulumi.Output<string>;
  readonly clusterSubnetId: pulumi.Output<string>;
  readonly postgresSubnetId: pulumi.Output<string>;
  readonly endpointSubnetId: pulumi.Output<string>;

  constructor(name: string, args: AzureNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:azure:Network", name, {}, opts);
    const child = { parent: this };

    // One resource group for everything the stack creates.
    const rg = new resources.ResourceGroup(`${name}-rg`, { location: args.location, tags: args.tags }, child);
    this.resourceGroupName = rg.name;

    if (args.existing) {
      const [clusterSubnet, pgSubnet, endpointSubnet] = args.existing.subnetIds;
      this.vnetId = pulumi.output(args.existing.networkId);
      this.clusterSubnetId = pulumi.output(clusterSubnet);
      this.postgresSubnetId = pulumi.output(pgSubnet);
      this.endpointSubnetId = pulumi.output(endpointSubnet);
      this.registerOutputs({ vnetId: this.vnetId });
      return;
    }

    const plan = azureSubnetPlan(args.cidr);
    const vnet = new network.VirtualNetwork(
      `${name}-vnet`,
      {
        resourceGroupName: rg.name,
        location: args.location,
        addressSpace: { addressPrefixes: [args.cidr] },
        tags: args.tags,
      },
      { ...child, ignoreChanges: ["subnets"] },
    );
    // Subnets one after another: Azure rejects concurrent subnet writes on one VNet.
    const clusterSubnet = new network.Subnet(
      `${name}-cluster`,
      {
        resourceGroupName: rg.name,
        virtualNetworkName: vnet.name,
        addressPrefix: plan.cluster,
        serviceEndpoints: [{ service: "Microsoft.Storage" }],
      },
      child,
    );
    const pgSubnet = new network.Subnet(
      `${name}-postgres`,
      {
        resourceGroupName: rg.name,
        virtualNetworkName: vnet.name,
        addressPrefix: plan.postgres,
        delegations: [{ name: "postgres", serviceName: "Microsoft.DBforPostgreSQL/flexibleServers" }],
      },
      { ...child, dependsOn: [clusterSubnet] },
    );
    const endpointSubnet = new network.Subnet(
      `${name}-endpoints`,
      {
        resourceGroupName: rg.name,
        virtualNetworkName: vnet.name,
        addressPrefix: plan.endpoints,
        privateEndpointNetworkPolicies: network.VirtualNetworkPrivateEndpointNetworkPolicies.Disabled,
      },
      { ...child, dependsOn: [pgSubnet] },
    );
    this.vnetId = vnet.id;
    this.clusterSubnetId = clusterSubnet.id;
    this.postgresSubnetId = pgSubnet.id;
    this.endpointSubnetId = endpointSubnet.id;
    this.registerOutputs({ vnetId: this.vnetId, resourceGroupName: this.resourceGroupName });
  }
}
