// Every rule of the llm-proxy policy pack, kept apart from the PolicyPack construction (policy/index.ts):
// constructing a PolicyPack starts the analyzer's gRPC server, so tests and `npm run plan` import this.
import type { Policies, ResourceValidationPolicy, StackValidationPolicy } from "@pulumi/policy";
import { filesystemPolicies } from "./filesystem";
import { kubernetesResourcePolicies, kubernetesStackPolicies } from "./kubernetes";
import { postgresPolicies } from "./postgres";
import { redisPolicies } from "./redis";

export const resourcePolicies: ResourceValidationPolicy[] = [
  ...postgresPolicies,
  ...redisPolicies,
  ...filesystemPolicies,
  ...kubernetesResourcePolicies,
];

export const stackPolicies: StackValidationPolicy[] = [...kubernetesStackPolicies];

export const policies: Policies = [...resourcePolicies, ...stackPolicies];
