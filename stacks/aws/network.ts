/** AWS network: a VPC with private subnets (one per AZ) and per-AZ NAT egress, or an existing VPC. */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { subBlock } from "../cidr";

export interface AwsNetworkArgs {
  /** VPC CIDR, a /16 or larger (e.g. 10.40.0.0/16). */
  cidr: string;
  /** AZ names, one private and one public subnet each (at most 6). */
  zones: string[];
  /** Use this VPC and these private subnets instead of creating them. */
  existing?: { networkId: string; subnetIds: string[] };
  tags: Record<string, string>;
}

/** Subnet plan: a /19 private subnet per AZ from the start of the VPC, a /24 public one per AZ in its last /20. */
export function awsSubnetPlan(vpcCidr: string, zoneCount: number): { private: string[]; public: string[] } {
  if (zoneCount < 1 || zoneCount > 6)
    throw new Error(`Between 1 and 6 zones are supported, got ${zoneCount}.`);
  const lastSlash20 = 15 * 4096;
  return {
    private: Array.from({ length: zoneCount }, (_, i) => subBlock(vpcCidr, 19, i)),
    public: Array.from({ length: zoneCount }, (_, i) => subBlock(vpcCidr, 24, i, lastSlash20)),
  };
}

export class AwsNetwork extends pulumi.ComponentResource {
  readonly vpcId: pulumi.Output<string>;
  /** Private subnets, one per AZ: nodes, databases, caches and mount targets live here. */
  readonly privateSubnetIds: pulumi.Output<string>[];
  /** CIDRs of the private subnets (the cluster's nodes and pods, as VPC CNI gives pods VPC addresses). */
  readonly privateCidrs: string[];

  constructor(name: string, args: AwsNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:aws:Network", name, {}, opts);
    if (args.existing) {
      this.vpcId = pulumi.output(args.existing.networkId);
      this.privateSubnetIds = args.existing.subnetIds.map((id) => pulumi.output(id));
      this.privateCidrs = [args.cidr];
      this.registerOutputs({ vpcId: this.vpcId });
      return;
    }
    if (args.zones.length < 1 || args.zones.length > 6) {
      throw new pulumi.ResourceError(
        `${args.zones.length} zones given. List 1 to 6 availability zones.`,
        this,
      );
    }
    const plan = awsSubnetPlan(args.cidr, args.zones.length);
    const child = { parent: this };
    const tags = (n: string, extra: Record<string, string> = {}) => ({ ...args.tags, Name: n, ...extra });

    // VPC with DNS (EKS, RDS and EFS endpoints resolve through it).
    const vpc = new aws.ec2.Vpc(
      `${name}-vpc`,
      { cidrBlock: args.cidr, enableDnsHostnames: true, enableDnsSupport: true, tags: tags(`${name}-vpc`) },
      child,
    );
    const igw = new aws.ec2.InternetGateway(
      `${name}-igw`,
      { vpcId: vpc.id, tags: tags(`${name}-igw`) },
      child,
    );
    const publicRt = new aws.ec2.RouteTable(
      `${name}-public-rt`,
      {
        vpcId: vpc.id,
        routes: [{ cidrBlock: "0.0.0.0/0", gatewayId: igw.id }],
        tags: tags(`${name}-public`),
      },
      child,
    );

    // Per AZ: a public subnet with a NAT gateway, and a private subnet routed through it (no cross-AZ egress SPOF).
    this.privateSubnetIds = args.zones.map((zone, i) => {
      const pub = new aws.ec2.Subnet(
        `${name}-public-${i}`,
        {
          vpcId: vpc.id,
          cidrBlock: plan.public[i],
          availabilityZone: zone,
          mapPublicIpOnLaunch: false,
          tags: tags(`${name}-public-${zone}`, { "kubernetes.io/role/elb": "1" }),
        },
        child,
      );
      new aws.ec2.RouteTableAssociation(
        `${name}-public-${i}`,
        { subnetId: pub.id, routeTableId: publicRt.id },
        child,
      );
      const eip = new aws.ec2.Eip(
        `${name}-nat-${i}`,
        { domain: "vpc", tags: tags(`${name}-nat-${zone}`) },
        child,
      );
      const nat = new aws.ec2.NatGateway(
        `${name}-nat-${i}`,
        { subnetId: pub.id, allocationId: eip.id, tags: tags(`${name}-nat-${zone}`) },
        { ...child, dependsOn: [igw] },
      );
      const priv = new aws.ec2.Subnet(
        `${name}-private-${i}`,
        {
          vpcId: vpc.id,
          cidrBlock: plan.private[i],
          availabilityZone: zone,
          mapPublicIpOnLaunch: false,
          tags: tags(`${name}-private-${zone}`, { "kubernetes.io/role/internal-elb": "1" }),
        },
        child,
      );
      const rt = new aws.ec2.RouteTable(
        `${name}-private-${i}`,
        {
          vpcId: vpc.id,
          routes: [{ cidrBlock: "0.0.0.0/0", natGatewayId: nat.id }],
          tags: tags(`${name}-private-${zone}`),
        },
        child,
      );
      new aws.ec2.RouteTableAssociation(
        `${name}-private-${i}`,
        { subnetId: priv.id, routeTableId: rt.id },
        child,
      );
      return priv.id;
    });
    this.vpcId = vpc.id;
    this.privateCidrs = plan.private;
    this.registerOutputs({ vpcId: this.vpcId, privateSubnetIds: this.privateSubnetIds });
  }
}
