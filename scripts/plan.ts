/**
 * npm run plan -- <stack> [--config key=value ...] [--secret key=value ...] [--out <dir>] [--strict]
 *
 * What a stack would create, with no cloud credentials and no Pulumi CLI: runs the real program under Pulumi's
 * mocks with Pulumi.yaml + Pulumi.<stack>.yaml (+ overrides, like `pulumi config set [--path]`), then prints
 * the resource tree with the settings that matter (HA flags, sizes, replicas, HPA, PDB), the stack outputs
 * (secrets masked) and the policy pack's verdict. `--out <dir>` writes every Kubernetes object as YAML, one
 * file per object, like `helm template` (Secret values are redacted). Bad config exits 2 with the program's
 * message; `--strict` exits 3 when a policy is violated. Computed values (ids, endpoints) are offline fakes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { stringify } from "yaml";
import { evaluatePolicies, type Violation } from "../policy/evaluate";
import { policies } from "../policy/rules";
import { CONFIG_KEYS, PROJECT, type ConfigKeySpec } from "../stacks/config";
import { OFFLINE_STACKS, runProgramOffline, type OfflineStack, type RecordedResource } from "./offline-run";

export interface PlanArgs {
  stack: OfflineStack;
  overrides: Record<string, string>;
  secrets: Record<string, string>;
  out?: string;
  strict: boolean;
}

export class UsageError extends Error {}

const USAGE =
  "usage: npm run plan -- <aws|azure|gcp> [--config key=value ...] [--secret key=value ...] [--out <dir>] [--strict]";

export function parseArgs(argv: string[]): PlanArgs {
  const args: Partial<PlanArgs> & { overrides: Record<string, string>; secrets: Record<string, string> } = {
    overrides: {},
    secrets: {},
    strict: false,
  };
  const keyValue = (flag: string, v: string | undefined): [string, string] => {
    const eq = v?.indexOf("=") ?? -1;
    if (!v || eq <= 0) throw new UsageError(`${flag} needs key=value (got ${v ?? "nothing"}).\n${USAGE}`);
    return [v.slice(0, eq), v.slice(eq + 1)];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--config" || a === "-c") {
      const [k, v] = keyValue(a, argv[++i]);
      args.overrides[k] = v;
    } else if (a.startsWith("--config=")) {
      const [k, v] = keyValue("--config", a.slice("--config=".length));
      args.overrides[k] = v;
    } else if (a === "--secret") {
      const [k, v] = keyValue(a, argv[++i]);
      args.secrets[k] = v;
    } else if (a === "--out" || a === "-o") {
      args.out = argv[++i];
      if (!args.out) throw new UsageError(`--out needs a directory.\n${USAGE}`);
    } else if (a.startsWith("--out=")) {
      args.out = a.slice("--out=".length);
    } else if (a === "--strict") {
      args.strict = true;
    } else if (a === "--help" || a === "-h") {
      throw new UsageError(USAGE);
    } else if (a.startsWith("-")) {
      throw new UsageError(`Unknown option ${a}.\n${USAGE}`);
    } else if (!args.stack) {
      if (!(OFFLINE_STACKS as readonly string[]).includes(a)) {
        throw new UsageError(`Unknown stack "${a}": expected one of ${OFFLINE_STACKS.join(", ")}.\n${USAGE}`);
      }
      args.stack = a as OfflineStack;
    } else {
      throw new UsageError(`Unexpected argument ${a}.\n${USAGE}`);
    }
  }
  if (!args.stack) throw new UsageError(`Which stack?\n${USAGE}`);
  return args as PlanArgs;
}

// ---------------------------------------------------------------------------------------------------------
// What matters per resource type

type Props = Record<string, unknown>;

const isRecord = (v: unknown): v is Props => typeof v === "object" && v !== null && !Array.isArray(v);
const obj = (v: unknown): Props => (isRecord(v) ? v : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const has = (v: unknown): boolean => v !== undefined && v !== null && v !== "";

/** `label value` pairs, skipping absent values; booleans print as on/off. */
function kv(pairs: [string, unknown][]): string {
  return pairs
    .filter(([, v]) => has(v))
    .map(([k, v]) => {
      const text = typeof v === "boolean" ? (v ? "on" : "off") : Array.isArray(v) ? v.join(",") : String(v);
      return k ? `${k} ${text}` : text;
    })
    .join(" · ");
}

function containerSummary(c: Props): string {
  const res = obj(c.resources);
  const req = obj(res.requests);
  const lim = obj(res.limits);
  const env = list(c.env).map(obj);
  const workers = env.find((e) => e.name === "WORKERS")?.value;
  return kv([
    ["image", c.image],
    ["workers", workers],
    ["cpu", has(req.cpu) ? `${String(req.cpu)}${has(lim.cpu) ? `/${String(lim.cpu)}` : ""}` : undefined],
    [
      "memory",
      has(req.memory) ? `${String(req.memory)}${has(lim.memory) ? `/${String(lim.memory)}` : ""}` : undefined,
    ],
    [
      "probes",
      ["startupProbe", "readinessProbe", "livenessProbe"]
        .filter((p) => has(c[p]))
        .map((p) => p.replace("Probe", ""))
        .join("/") || undefined,
    ],
  ]);
}

/** The one-line settings summary for a resource, or "" when nothing is worth showing. */
export function summarize(r: Pick<RecordedResource, "type" | "inputs" | "outputs">): string {
  const p = r.inputs;
  const meta = obj(obj(r.outputs).metadata);
  switch (r.type) {
    // AWS
    case "aws:ec2/vpc:Vpc":
      return kv([["cidr", p.cidrBlock]]);
    case "aws:ec2/subnet:Subnet":
      return kv([
        ["", p.availabilityZone],
        ["cidr", p.cidrBlock],
      ]);
    case "aws:eks/cluster:Cluster":
      return kv([
        ["version", p.version],
        ["private endpoint", obj(p.vpcConfig).endpointPrivateAccess],
      ]);
    case "aws:eks/nodeGroup:NodeGroup": {
      const s = obj(p.scalingConfig);
      return kv([
        ["", p.instanceTypes],
        ["nodes", `${String(s.minSize)}..${String(s.maxSize)} (desired ${String(s.desiredSize)})`],
      ]);
    }
    case "aws:eks/addon:Addon":
      return kv([["", p.addonName]]);
    case "aws:rds/instance:Instance":
      return kv([
        ["", p.instanceClass],
        ["", `${String(p.engine)} ${String(p.engineVersion ?? "")}`.trim()],
        ["multi-AZ", p.multiAz],
        [
          "storage",
          has(p.allocatedStorage)
            ? `${String(p.allocatedStorage)}GB${has(p.maxAllocatedStorage) ? `→${String(p.maxAllocatedStorage)}GB` : ""}`
            : undefined,
        ],
        ["encrypted", p.storageEncrypted],
        ["public", p.publiclyAccessible],
        ["backups", has(p.backupRetentionPeriod) ? `${String(p.backupRetentionPeriod)}d` : undefined],
        ["deletion protection", p.deletionProtection],
      ]);
    case "aws:elasticache/replicationGroup:ReplicationGroup":
      return kv([
        ["", p.nodeType],
        ["", `${String(p.engine ?? "redis")} ${String(p.engineVersion ?? "")}`.trim()],
        ["nodes", p.numCacheClusters],
        ["failover", p.automaticFailoverEnabled],
        ["multi-AZ", p.multiAzEnabled],
        ["TLS", p.transitEncryptionEnabled],
        ["at-rest", p.atRestEncryptionEnabled],
        ["AUTH", has(p.authToken) || has(p.authTokenWo)],
      ]);
    case "aws:efs/fileSystem:FileSystem":
      return kv([
        ["encrypted", p.encrypted],
        ["", p.availabilityZoneName ? `One Zone ${String(p.availabilityZoneName)}` : "Regional"],
        ["throughput", p.throughputMode],
      ]);
    case "aws:efs/mountTarget:MountTarget":
      return "";
    // Azure
    case "azure-native:containerservice:ManagedCluster":
      return kv([
        ["version", p.kubernetesVersion],
        ...list(p.agentPoolProfiles)
          .map(obj)
          .map((pool): [string, unknown] => [
            `pool ${String(pool.name)}`,
            kv([
              ["", pool.vmSize],
              [
                "nodes",
                pool.enableAutoScaling ? `${String(pool.minCount)}..${String(pool.maxCount)}` : pool.count,
              ],
              ["zones", pool.availabilityZones],
            ]),
          ]),
      ]);
    case "azure-native:containerservice:AgentPool":
      return kv([
        ["", p.vmSize],
        ["nodes", p.enableAutoScaling ? `${String(p.minCount)}..${String(p.maxCount)}` : p.count],
        ["zones", p.availabilityZones],
      ]);
    case "azure-native:dbforpostgresql:Server":
      return kv([
        ["", obj(p.sku).name],
        ["tier", obj(p.sku).tier],
        ["PostgreSQL", p.version],
        ["HA", obj(p.highAvailability).mode],
        [
          "storage",
          has(obj(p.storage).storageSizeGB) ? `${String(obj(p.storage).storageSizeGB)}GB` : undefined,
        ],
        [
          "backups",
          has(obj(p.backup).backupRetentionDays)
            ? `${String(obj(p.backup).backupRetentionDays)}d`
            : undefined,
        ],
        ["private", has(obj(p.network).delegatedSubnetResourceId)],
      ]);
    case "azure-native:redisenterprise:RedisEnterprise":
      return kv([
        ["", obj(p.sku).name],
        ["HA", p.highAvailability],
        ["zones", p.zones],
        ["public", p.publicNetworkAccess],
      ]);
    case "azure-native:redisenterprise:Database":
      return kv([
        ["protocol", p.clientProtocol],
        ["clustering", p.clusteringPolicy],
        ["eviction", p.evictionPolicy],
      ]);
    case "azure-native:redis:Redis":
      return kv([
        [
          "",
          `${String(obj(p.sku).name)} ${String(obj(p.sku).family ?? "")}${String(obj(p.sku).capacity ?? "")}`,
        ],
        ["zones", p.zones],
        ["non-TLS port", p.enableNonSslPort],
      ]);
    case "azure-native:storage:StorageAccount":
      return kv([
        ["", p.kind],
        ["", obj(p.sku).name],
      ]);
    case "azure-native:storage:FileShare":
      return kv([
        ["", p.enabledProtocols],
        ["quota", has(p.shareQuota) ? `${String(p.shareQuota)}GiB` : undefined],
      ]);
    // GCP
    case "gcp:container/cluster:Cluster":
      return kv([
        ["", p.location],
        ["version", p.minMasterVersion ?? obj(p.releaseChannel).channel],
      ]);
    case "gcp:container/nodePool:NodePool": {
      const a = obj(p.autoscaling);
      return kv([
        ["", obj(p.nodeConfig).machineType],
        [
          "nodes/zone",
          has(a.minNodeCount) ? `${String(a.minNodeCount)}..${String(a.maxNodeCount)}` : p.nodeCount,
        ],
        ["zones", p.nodeLocations],
      ]);
    }
    case "gcp:sql/databaseInstance:DatabaseInstance": {
      const s = obj(p.settings);
      const b = obj(s.backupConfiguration);
      return kv([
        ["", s.tier],
        ["", p.databaseVersion],
        ["availability", s.availabilityType],
        ["disk", has(s.diskSize) ? `${String(s.diskSize)}GB` : undefined],
        ["public IP", obj(s.ipConfiguration).ipv4Enabled],
        ["TLS", obj(s.ipConfiguration).sslMode],
        [
          "backups",
          has(obj(b.backupRetentionSettings).retainedBackups)
            ? `${String(obj(b.backupRetentionSettings).retainedBackups)}`
            : b.enabled,
        ],
        ["PITR", b.pointInTimeRecoveryEnabled],
        ["deletion protection", s.deletionProtectionEnabled],
      ]);
    }
    case "gcp:redis/instance:Instance":
      return kv([
        ["", p.tier],
        ["memory", has(p.memorySizeGb) ? `${String(p.memorySizeGb)}GB` : undefined],
        ["TLS", p.transitEncryptionMode],
        ["AUTH", p.authEnabled],
        ["replicas", p.replicaCount],
      ]);
    case "gcp:filestore/instance:Instance": {
      const share = obj(Array.isArray(p.fileShares) ? p.fileShares[0] : p.fileShares);
      return kv([
        ["", p.tier],
        ["", p.location],
        ["capacity", has(share.capacityGb) ? `${String(share.capacityGb)}GB` : undefined],
      ]);
    }
    // Kubernetes
    case "kubernetes:apps/v1:Deployment":
    case "kubernetes:apps/v1:StatefulSet": {
      const spec = obj(p.spec);
      const pod = obj(obj(spec.template).spec);
      const strategy = obj(spec.strategy ?? spec.updateStrategy);
      return kv([
        [
          "",
          `${String(meta.namespace ?? obj(p.metadata).namespace ?? "default")}/${String(meta.name ?? obj(p.metadata).name)}`,
        ],
        ["replicas", spec.replicas],
        ["strategy", strategy.type],
        ["", list(pod.containers).map(obj).map(containerSummary).join(" | ")],
      ]);
    }
    case "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": {
      const spec = obj(p.spec);
      const cpu = list(spec.metrics)
        .map(obj)
        .map((m) => obj(obj(m.resource).target).averageUtilization)
        .find(has);
      const down = obj(obj(spec.behavior).scaleDown).stabilizationWindowSeconds;
      return kv([
        ["target", obj(spec.scaleTargetRef).name],
        ["replicas", `${String(spec.minReplicas ?? 1)}..${String(spec.maxReplicas)}`],
        ["cpu", has(cpu) ? `${String(cpu)}%` : undefined],
        ["scale-down window", has(down) ? `${String(down)}s` : undefined],
      ]);
    }
    case "kubernetes:policy/v1:PodDisruptionBudget": {
      const spec = obj(p.spec);
      return kv([
        ["minAvailable", spec.minAvailable],
        ["maxUnavailable", spec.maxUnavailable],
      ]);
    }
    case "kubernetes:core/v1:PersistentVolumeClaim": {
      const spec = obj(p.spec);
      return kv([
        ["", spec.accessModes],
        ["class", spec.storageClassName],
        ["size", obj(obj(spec.resources).requests).storage],
      ]);
    }
    case "kubernetes:core/v1:PersistentVolume": {
      const spec = obj(p.spec);
      return kv([
        ["", spec.accessModes],
        ["capacity", obj(spec.capacity).storage],
        ["driver", obj(spec.csi).driver],
      ]);
    }
    case "kubernetes:storage.k8s.io/v1:StorageClass":
      return kv([
        ["", p.provisioner],
        ...Object.entries(obj(p.parameters)).map(([k, v]): [string, unknown] => [k, v]),
      ]);
    case "kubernetes:core/v1:Service": {
      const spec = obj(p.spec);
      return kv([
        ["", spec.type ?? "ClusterIP"],
        ["ports", list(spec.ports).map((port) => obj(port).port)],
      ]);
    }
    case "kubernetes:core/v1:Secret":
    case "kubernetes:core/v1:ConfigMap":
      // Keys only: values stay out of the plan.
      return kv([["keys", Object.keys({ ...obj(p.data), ...obj(p.stringData) })]]);
    default:
      return "";
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tree

/** The plan as text: a tree of resources by parent, each with its key settings, `[protected]` where set. */
export function renderTree(resources: RecordedResource[]): string {
  const byUrn = new Map(resources.map((r) => [r.urn, r]));
  const children = new Map<string, RecordedResource[]>();
  const roots: RecordedResource[] = [];
  for (const r of resources) {
    if (r.options.parent && byUrn.has(r.options.parent)) {
      const siblings = children.get(r.options.parent) ?? [];
      siblings.push(r);
      children.set(r.options.parent, siblings);
    } else {
      roots.push(r);
    }
  }
  const lines: string[] = [];
  const walk = (r: RecordedResource, prefix: string, last: boolean, depth: number) => {
    const summary = summarize(r);
    const flags = r.options.protect ? " [protected]" : "";
    const branch = depth === 0 ? "" : last ? "└─ " : "├─ ";
    lines.push(`${prefix}${branch}${r.type}  ${r.name}${flags}${summary ? `  ${summary}` : ""}`);
    const kids = children.get(r.urn) ?? [];
    const nextPrefix = depth === 0 ? "" : prefix + (last ? "   " : "│  ");
    kids.forEach((k, i) => walk(k, nextPrefix, i === kids.length - 1, depth + 1));
  };
  // Components first (they hold the tree), then loose resources.
  const ordered = [...roots.filter((r) => !r.custom), ...roots.filter((r) => r.custom)];
  for (const r of ordered) walk(r, "", true, 0);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// YAML (helm template-like)

export const REDACTED = "<redacted: set by pulumi up>";

/** A Kubernetes object as it would be applied: recorded inputs, the provider-assigned name, Secret values redacted. */
export function kubernetesObject(r: RecordedResource): Props | undefined {
  if (!r.type.startsWith("kubernetes:") || !r.custom || !has(r.inputs.kind)) return undefined;
  const metadata = { ...obj(r.inputs.metadata) };
  const assigned = obj(obj(r.outputs).metadata).name;
  if (!has(metadata.name) && has(assigned)) metadata.name = assigned;
  const object: Props = { apiVersion: r.inputs.apiVersion, kind: r.inputs.kind, ...r.inputs, metadata };
  if (r.inputs.kind === "Secret") {
    for (const field of ["data", "stringData"]) {
      if (isRecord(object[field])) {
        object[field] = Object.fromEntries(Object.keys(object[field] as Props).map((k) => [k, REDACTED]));
      }
    }
  }
  return object;
}

/** Writes one YAML file per Kubernetes object under `dir/<namespace or _cluster>/`; returns the paths written. */
export function writeManifests(resources: RecordedResource[], dir: string): string[] {
  const written: string[] = [];
  let index = 0;
  for (const r of resources) {
    const object = kubernetesObject(r);
    if (!object) continue;
    const metadata = obj(object.metadata);
    const ns = has(metadata.namespace) ? String(metadata.namespace) : "_cluster";
    const file = path.join(
      dir,
      ns,
      `${String(++index).padStart(3, "0")}-${String(object.kind).toLowerCase()}-${String(metadata.name)}.yaml`,
    );
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `# Source: ${r.type} ${r.name}\n${stringify(object, { lineWidth: 0 })}`);
    written.push(file);
  }
  return written;
}

// ---------------------------------------------------------------------------------------------------------
// Main

function formatOutputs(outputs: Record<string, unknown>, secret: string[]): string {
  return Object.entries(outputs)
    .map(
      ([k, v]) =>
        `  ${k}: ${secret.includes(k) ? "[secret]" : typeof v === "string" ? v : JSON.stringify(v)}`,
    )
    .join("\n");
}

function formatViolations(violations: Violation[]): string {
  if (violations.length === 0) return `Policy pack (policy/): ${policies.length} rules, no violations.`;
  return [
    `Policy pack (policy/): ${violations.length} violation(s):`,
    ...violations.map((v) => `  ✗ ${v.policy}${v.resource ? ` on ${v.resource}` : ""}: ${v.message}`),
  ].join("\n");
}

/**
 * The `--config` overrides as `key=value` for the plan header, the values of secret project keys (`secret: true`
 * in Pulumi.yaml, CONFIG_KEYS here) masked as `[secret]`: a key passed with --config instead of --secret must not
 * reach the terminal or a CI log.
 */
export function describeOverrides(overrides: Record<string, string>): string[] {
  return Object.entries(overrides).map(([k, v]) => {
    const bare = k.startsWith(`${PROJECT}:`) ? k.slice(PROJECT.length + 1) : k;
    const spec = (CONFIG_KEYS as Record<string, ConfigKeySpec>)[bare];
    return `${k}=${spec?.secret ? "[secret]" : v}`;
  });
}

/** Errors thrown by the program on bad config (StackConfigError, pulumi.ResourceError) carry a clear message. */
function configErrorMessage(error: unknown): string {
  const e = error as Error;
  return e?.message ?? String(error);
}

export async function main(argv: string[]): Promise<number> {
  let args: PlanArgs;
  try {
    args = parseArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`${error.message}\n`);
      return 64;
    }
    throw error;
  }
  let run;
  try {
    run = await runProgramOffline({ stack: args.stack, overrides: args.overrides, secrets: args.secrets });
  } catch (error) {
    process.stderr.write(
      `plan: stack ${args.stack} has a configuration error:\n${configErrorMessage(error)}\n`,
    );
    return 2;
  }
  const custom = run.resources.filter((r) => r.custom && !r.type.startsWith("pulumi:providers:"));
  const overrides = describeOverrides(args.overrides);
  process.stdout.write(
    [
      `Plan for stack "${args.stack}" (project ${run.project}): ${custom.length} resources` +
        (overrides.length ? `, with ${overrides.join(" ")}` : ""),
      "Offline: the real program under Pulumi's mocks. Ids, endpoints and generated values are fakes; nothing was sent to a cloud.",
      "",
      renderTree(run.resources),
      "",
      "Outputs:",
      formatOutputs(run.outputs, run.secretOutputs),
      "",
    ].join("\n"),
  );
  const violations = await evaluatePolicies(run.resources);
  process.stdout.write(`${formatViolations(violations)}\n`);
  if (args.out) {
    const files = writeManifests(run.resources, path.resolve(args.out));
    process.stdout.write(`Wrote ${files.length} Kubernetes objects to ${path.resolve(args.out)}\n`);
  }
  return args.strict && violations.length > 0 ? 3 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`plan: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
}
