/** A security group that admits one TCP port from the cluster only. */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/** Who may connect: the cluster's security group when the program created the cluster, else CIDRs. */
export interface AwsClients {
  securityGroupId?: pulumi.Output<string>;
  cidrs: string[];
}

/** Ingress rules for `port` from the clients; a pure decision, tested without mocks. */
export function clientIngress(port: number, clients: AwsClients, description: string) {
  return clients.securityGroupId
    ? [
        {
          protocol: "tcp",
          fromPort: port,
          toPort: port,
          securityGroups: [clients.securityGroupId],
          description,
        },
      ]
    : [{ protocol: "tcp", fromPort: port, toPort: port, cidrBlocks: clients.cidrs, description }];
}

export function clientSecurityGroup(
  name: string,
  args: {
    vpcId: pulumi.Input<string>;
    port: number;
    clients: AwsClients;
    description: string;
    tags: Record<string, string>;
  },
  opts: pulumi.CustomResourceOptions,
): aws.ec2.SecurityGroup {
  return new aws.ec2.SecurityGroup(
    name,
    {
      vpcId: args.vpcId,
      description: args.description,
      ingress: clientIngress(args.port, args.clients, args.description),
      egress: [],
      tags: { ...args.tags, Name: name },
    },
    opts,
  );
}
