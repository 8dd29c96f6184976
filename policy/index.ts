// The llm-proxy policy pack: `pulumi preview --policy-pack policy` (CI passes `policyPacks: policy`).
// Runs from the repository's node_modules; the rules live in ./rules so tests can call them directly.
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./rules";

new PolicyPack("llm-proxy", {
  description:
    "Invariants llm-proxy promises on AWS, Azure and GCP: HA, private, encrypted, backed-up data stores; hardened, disruption-safe workloads.",
  enforcementLevel: "mandatory",
  policies,
});
