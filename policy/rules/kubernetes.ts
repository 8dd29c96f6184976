// Kubernetes workload invariants: every Deployment and StatefulSet runs non-root with requests/limits and probes; every
// multi-replica Deployment has a PodDisruptionBudget that still lets a node drain at the HPA's minimum;
// shared volumes are ReadWriteMany.
import type { Unwrap } from "@pulumi/pulumi";
import {
  PolicyResource,
  ReportViolation,
  ResourceValidationPolicy,
  StackValidationPolicy,
  validateResourceOfType,
} from "@pulumi/policy";
import * as apps from "@pulumi/kubernetes/apps/v1";
import type * as autoscaling from "@pulumi/kubernetes/autoscaling/v2";
import * as core from "@pulumi/kubernetes/core/v1";
import type * as k8sPolicy from "@pulumi/kubernetes/policy/v1";

type DeploymentProps = Unwrap<apps.DeploymentArgs>;
type HpaProps = Unwrap<autoscaling.HorizontalPodAutoscalerArgs>;
type PdbProps = Unwrap<k8sPolicy.PodDisruptionBudgetArgs>;
type PodSpec = NonNullable<NonNullable<NonNullable<DeploymentProps["spec"]>["template"]>["spec"]>;
type Container = PodSpec["containers"][number];
type LabelSelector = NonNullable<NonNullable<PdbProps["spec"]>["selector"]>;

// Type tokens (the classes keep __pulumiType internal); tests check they match the SDK classes.
export const DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment";
export const HPA_TYPE = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler";
export const PDB_TYPE = "kubernetes:policy/v1:PodDisruptionBudget";

/** Validates the pod template of every Deployment and StatefulSet (Chroma runs as a StatefulSet). */
function forWorkloads(
  check: (pod: PodSpec | undefined, name: string, report: ReportViolation) => void,
): ResourceValidationPolicy["validateResource"] {
  return [
    validateResourceOfType(apps.Deployment, (w, args, report) =>
      check(w.spec?.template?.spec, args.name, report),
    ),
    validateResourceOfType(apps.StatefulSet, (w, args, report) =>
      check(w.spec?.template?.spec as PodSpec | undefined, args.name, report),
    ),
  ];
}

const allContainers = (pod: PodSpec | undefined): Container[] => [
  ...(pod?.initContainers ?? []),
  ...(pod?.containers ?? []),
];

export const deploymentNonRoot: ResourceValidationPolicy = {
  name: "deployment-non-root",
  description: "Every container runs as a non-root user, without privilege escalation.",
  enforcementLevel: "mandatory",
  validateResource: forWorkloads((pod, name, report) => {
    const args = { name };
    for (const c of allContainers(pod)) {
      const runAsNonRoot = c.securityContext?.runAsNonRoot ?? pod?.securityContext?.runAsNonRoot;
      const runAsUser = c.securityContext?.runAsUser ?? pod?.securityContext?.runAsUser;
      if (runAsNonRoot !== true) report(`${args.name}/${c.name}: set securityContext.runAsNonRoot: true.`);
      if (runAsUser === 0) report(`${args.name}/${c.name}: runAsUser must not be 0.`);
      if (c.securityContext?.privileged === true) report(`${args.name}/${c.name}: must not be privileged.`);
      if (c.securityContext?.allowPrivilegeEscalation !== false) {
        report(`${args.name}/${c.name}: set securityContext.allowPrivilegeEscalation: false.`);
      }
    }
  }),
};

export const deploymentResources: ResourceValidationPolicy = {
  name: "deployment-resources",
  description:
    "Every container requests CPU and memory and has a memory limit (so it is scheduled and bounded).",
  enforcementLevel: "mandatory",
  validateResource: forWorkloads((pod, name, report) => {
    const args = { name };
    for (const c of allContainers(pod)) {
      const requests = c.resources?.requests ?? {};
      const limits = c.resources?.limits ?? {};
      for (const key of ["cpu", "memory"]) {
        if (requests[key] === undefined) report(`${args.name}/${c.name}: set resources.requests.${key}.`);
      }
      if (limits.memory === undefined) report(`${args.name}/${c.name}: set resources.limits.memory.`);
    }
  }),
};

export const deploymentProbes: ResourceValidationPolicy = {
  name: "deployment-probes",
  description: "Every container has a readiness probe (traffic) and a liveness probe (restarts).",
  enforcementLevel: "mandatory",
  validateResource: forWorkloads((pod, name, report) => {
    const args = { name };
    for (const c of pod?.containers ?? []) {
      if (!c.readinessProbe) report(`${args.name}/${c.name}: set a readinessProbe.`);
      if (!c.livenessProbe) report(`${args.name}/${c.name}: set a livenessProbe.`);
    }
  }),
};

export const sharedVolumesReadWriteMany: ResourceValidationPolicy = {
  name: "shared-volumes-rwx",
  description: "Volumes are shared by replicas in several zones, so every claim and volume is ReadWriteMany.",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(core.PersistentVolumeClaim, (pvc, args, report) => {
      if (!(pvc.spec?.accessModes ?? []).includes("ReadWriteMany")) {
        report(`PersistentVolumeClaim ${args.name} must request accessModes [ReadWriteMany].`);
      }
    }),
    validateResourceOfType(core.PersistentVolume, (pv, args, report) => {
      if (!(pv.spec?.accessModes ?? []).includes("ReadWriteMany")) {
        report(`PersistentVolume ${args.name} must offer accessModes [ReadWriteMany].`);
      }
    }),
  ],
};

/** True when `selector` (matchLabels and matchExpressions) selects a pod with `labels`. Empty selects nothing. */
export function selectorMatches(
  selector: LabelSelector | undefined,
  labels: Record<string, string>,
): boolean {
  const matchLabels = selector?.matchLabels ?? {};
  const expressions = selector?.matchExpressions ?? [];
  if (Object.keys(matchLabels).length === 0 && expressions.length === 0) return false;
  if (!Object.entries(matchLabels).every(([k, v]) => labels[k] === v)) return false;
  return expressions.every((e) => {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case "In":
        return has && values.includes(labels[e.key]);
      case "NotIn":
        return !has || !values.includes(labels[e.key]);
      case "Exists":
        return has;
      case "DoesNotExist":
        return !has;
      default:
        return false;
    }
  });
}

/** Resolves an int-or-percent PDB value against `replicas`; Kubernetes rounds percentages up. */
export function resolveIntOrPercent(value: number | string, replicas: number): number {
  if (typeof value === "number") return value;
  const m = /^(\d+)%$/.exec(value.trim());
  if (m) return Math.ceil((Number(m[1]) * replicas) / 100);
  return Number(value);
}

/** How many pods a PDB lets the eviction API remove when the Deployment runs `replicas` pods. */
export function allowedDisruptions(pdb: PdbProps, replicas: number): number {
  const spec = pdb.spec ?? {};
  if (spec.maxUnavailable !== undefined)
    return Math.max(0, resolveIntOrPercent(spec.maxUnavailable, replicas));
  if (spec.minAvailable !== undefined)
    return Math.max(0, replicas - resolveIntOrPercent(spec.minAvailable, replicas));
  return 0;
}

const namespaceOf = (props: { metadata?: { namespace?: string } }): string =>
  props.metadata?.namespace ?? "default";

/** The smallest replica count a Deployment runs at: its HPA's minReplicas (default 1), else spec.replicas (default 1). */
export function minimumReplicas(dep: DeploymentProps, hpa: HpaProps | undefined): number {
  if (hpa) return hpa.spec?.minReplicas ?? 1;
  return dep.spec?.replicas ?? 1;
}

export const podDisruptionBudgets: StackValidationPolicy = {
  name: "pdb-for-multi-replica",
  description:
    "Every Deployment that runs more than one replica has a PodDisruptionBudget selecting its pods that still allows at least one eviction at the HPA's minimum (otherwise node drains block).",
  enforcementLevel: "mandatory",
  validateStack: (args, report: ReportViolation) => {
    const ofType = (type: string): PolicyResource[] => args.resources.filter((r) => r.type === type);
    const hpas = ofType(HPA_TYPE);
    const pdbs = ofType(PDB_TYPE);
    for (const depResource of ofType(DEPLOYMENT_TYPE)) {
      const dep = depResource.props as DeploymentProps;
      const ns = namespaceOf(dep);
      const name = dep.metadata?.name ?? depResource.name;
      const hpaResource = hpas.find((h) => {
        const hpa = h.props as HpaProps;
        const ref = hpa.spec?.scaleTargetRef;
        return namespaceOf(hpa) === ns && ref?.kind === "Deployment" && ref.name === name;
      });
      const hpa = hpaResource?.props as HpaProps | undefined;
      const min = minimumReplicas(dep, hpa);
      const max = hpa?.spec?.maxReplicas ?? min;
      if (max <= 1) continue; // a single-replica workload (e.g. the Chroma writer) is not covered
      const labels = dep.spec?.template?.metadata?.labels ?? {};
      const matching = pdbs.filter((p) => {
        const pdb = p.props as PdbProps;
        return namespaceOf(pdb) === ns && selectorMatches(pdb.spec?.selector, labels);
      });
      if (matching.length === 0) {
        report(
          `Deployment ${ns}/${name} runs up to ${max} replicas but no PodDisruptionBudget selects its pods.`,
          depResource.urn,
        );
        continue;
      }
      for (const p of matching) {
        const allowed = allowedDisruptions(p.props as PdbProps, min);
        if (allowed < 1) {
          report(
            `PodDisruptionBudget ${p.name} allows ${allowed} eviction(s) when Deployment ${ns}/${name} runs its minimum of ${min} replica(s); lower minAvailable below ${min} (or set maxUnavailable >= 1) so nodes can drain.`,
            p.urn,
          );
        }
      }
    }
  },
};

export const kubernetesResourcePolicies: ResourceValidationPolicy[] = [
  deploymentNonRoot,
  deploymentResources,
  deploymentProbes,
  sharedVolumesReadWriteMany,
];
export const kubernetesStackPolicies: StackValidationPolicy[] = [podDisruptionBudgets];
