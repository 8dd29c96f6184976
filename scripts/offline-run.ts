/**
 * Run the real Pulumi program offline, under Pulumi's mocks, with a stack's real config, and return everything
 * it would create: each resource's type, name, inputs, mocked outputs and resource options, plus the stack
 * outputs. Used by the stack tests, `npm run plan` and the policy pack runner.
 *
 *   const run = await runProgramOffline({ stack: "aws", overrides: { "llm-proxy:replicas": "5" } });
 *
 * Config is layered like the CLI does it: Pulumi.yaml defaults, then Pulumi.<stack>.yaml, then `overrides`
 * (like `pulumi config set`; keys with `.a` or `[0]` after the key work like `--path`), then `secrets`.
 *
 * Pulumi keeps its state in globals: do one run per process, or (vitest) call `vi.resetModules()` between
 * runs. Each run installs fresh mocks, so the runs don't see each other's resources.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";

export type OfflineStack = "aws" | "azure" | "gcp";

export const OFFLINE_STACKS: readonly OfflineStack[] = ["aws", "azure", "gcp"];

export interface OfflineRunOptions {
  /** Stack name: selects Pulumi.<stack>.yaml. */
  stack: OfflineStack;
  /**
   * Config overrides, like `pulumi config set`. Keys are `ns:key` (`llm-proxy:replicas`, `aws:region`) or a bare
   * project key (`replicas`). A key followed by `.field` or `[n]` sets a nested value like `--path`, where
   * "true"/"false" become booleans and integers numbers. Non-string values are stored as JSON.
   */
  overrides?: Record<string, string | number | boolean | string[]>;
  /** Secret config values (`pulumi config set --secret`), same key forms as overrides. */
  secrets?: Record<string, string>;
  /** Directory holding Pulumi.yaml; default: the repository root. */
  projectDir?: string;
  /**
   * Loads the program. Default: `require` of the project's `main` when a TypeScript loader is registered
   * (ts-node), else a dynamic `import` (vitest). Called after the mocks and config are in place.
   */
  load?: (programPath: string) => Promise<unknown>;
}

export interface RecordedOptions {
  protect: boolean;
  retainOnDelete: boolean;
  deleteBeforeReplace: boolean;
  ignoreChanges: string[];
  /** URNs this resource depends on (explicit dependsOn plus implicit input dependencies). */
  dependencies: string[];
  /** Provider reference `urn::id`, empty for the default provider. */
  provider: string;
  /** Parent URN, empty for the stack root. */
  parent: string;
  replaceOnChanges: string[];
  additionalSecretOutputs: string[];
}

export interface RecordedResource {
  type: string;
  /** Logical (Pulumi) name. */
  name: string;
  urn: string;
  /** Custom resource (true) or component (false). */
  custom: boolean;
  id: string | undefined;
  /** Inputs as the engine received them, secrets unwrapped. */
  inputs: Record<string, unknown>;
  /** Dotted paths of inputs that were secret (e.g. `stringData.DATABASE_URL`). */
  secretInputs: string[];
  /** Inputs merged with the mocked computed outputs (ids, ARNs, endpoints, metadata.name). */
  outputs: Record<string, unknown>;
  options: RecordedOptions;
}

export interface RecordedInvoke {
  token: string;
  inputs: Record<string, unknown>;
}

export interface OfflineRunResult {
  stack: OfflineStack;
  project: string;
  /** The flattened config the program saw (`ns:key` → string), secrets included in plain text. */
  config: Record<string, string>;
  secretKeys: string[];
  resources: RecordedResource[];
  invokes: RecordedInvoke[];
  /** Stack outputs (the program's exports), resolved. */
  outputs: Record<string, unknown>;
  /** Names of the outputs that are secret. */
  secretOutputs: string[];
}

// ---------------------------------------------------------------------------------------------------------
// Config files

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

type YamlValue = string | number | boolean | null | YamlValue[] | { [k: string]: YamlValue };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** How the CLI hands a config value to the program: strings as-is, everything else as JSON. */
export function toConfigString(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

export interface ProjectFile {
  name: string;
  main?: string;
  runtime: unknown;
  description?: string;
  config?: Record<string, unknown>;
}

export function readProjectFile(projectDir: string): ProjectFile {
  return parseYaml(fs.readFileSync(path.join(projectDir, "Pulumi.yaml"), "utf8")) as ProjectFile;
}

/**
 * The config a stack's program sees: Pulumi.yaml defaults (and plain provider values), then the stack file.
 * `{secure: …}` values become a placeholder and are listed in `secretKeys`.
 */
export function loadStackConfigFiles(
  projectDir: string,
  stack: string,
): { project: string; config: Record<string, string>; secretKeys: string[] } {
  const project = readProjectFile(projectDir);
  const config: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [key, decl] of Object.entries(project.config ?? {})) {
    const qualified = key.includes(":") ? key : `${project.name}:${key}`;
    if (
      isRecord(decl) &&
      ("type" in decl || "description" in decl || "default" in decl || "secret" in decl)
    ) {
      if (decl.default !== undefined) config[qualified] = toConfigString(decl.default);
    } else if (isRecord(decl) && "value" in decl) {
      config[qualified] = toConfigString(decl.value);
    } else if (decl !== undefined && decl !== null) {
      config[qualified] = toConfigString(decl);
    }
  }
  const stackFile = path.join(projectDir, `Pulumi.${stack}.yaml`);
  const parsed = (parseYaml(fs.readFileSync(stackFile, "utf8")) ?? {}) as {
    config?: Record<string, YamlValue>;
  };
  for (const [key, value] of Object.entries(parsed.config ?? {})) {
    const qualified = key.includes(":") ? key : `${project.name}:${key}`;
    if (isRecord(value) && typeof value.secure === "string") {
      config[qualified] = `secure-placeholder-for-${qualified}`;
      secretKeys.push(qualified);
    } else {
      config[qualified] = toConfigString(value);
    }
  }
  return { project: project.name, config, secretKeys };
}

/** Split `ns:key.a[0].b` into the config key and the path segments (numbers for indexes). */
export function parseConfigPath(key: string, project: string): { key: string; path: (string | number)[] } {
  const qualified = /^[^.[\]]+:/.test(key) ? key : `${project}:${key}`;
  const colon = qualified.indexOf(":");
  const rest = qualified.slice(colon + 1);
  const m = /^([^.[]+)(.*)$/.exec(rest);
  if (!m) throw new Error(`Invalid config key "${key}".`);
  const segments: (string | number)[] = [];
  const re = /\.([^.[\]]+)|\[(\d+)\]|\["([^"]+)"\]/g;
  let consumed = 0;
  for (let r = re.exec(m[2]); r; r = re.exec(m[2])) {
    if (r.index !== consumed) throw new Error(`Invalid config path "${key}".`);
    consumed = r.index + r[0].length;
    segments.push(r[1] ?? (r[2] !== undefined ? Number(r[2]) : r[3]));
  }
  if (consumed !== m[2].length) throw new Error(`Invalid config path "${key}".`);
  return { key: `${qualified.slice(0, colon)}:${m[1]}`, path: segments };
}

/** `pulumi config set [--path]` on a flat config map. */
export function setConfigValue(
  config: Record<string, string>,
  project: string,
  key: string,
  value: string | number | boolean | string[],
): string {
  const { key: k, path: segments } = parseConfigPath(key, project);
  if (segments.length === 0) {
    config[k] = toConfigString(value);
    return k;
  }
  // --path: "true"/"false" become booleans and integers numbers, as the CLI does.
  const typed =
    typeof value !== "string"
      ? value
      : value === "true" || value === "false"
        ? value === "true"
        : /^-?\d+$/.test(value)
          ? Number(value)
          : value;
  let root: unknown;
  try {
    root = config[k] === undefined ? undefined : JSON.parse(config[k]);
  } catch {
    root = undefined;
  }
  if (typeof root !== "object" || root === null) root = typeof segments[0] === "number" ? [] : {};
  let node = root as Record<string | number, unknown>;
  segments.forEach((seg, i) => {
    if (i === segments.length - 1) {
      node[seg] = typed;
      return;
    }
    const next = node[seg];
    if (typeof next !== "object" || next === null) node[seg] = typeof segments[i + 1] === "number" ? [] : {};
    node = node[seg] as Record<string | number, unknown>;
  });
  config[k] = JSON.stringify(root);
  return k;
}

// ---------------------------------------------------------------------------------------------------------
// Realistic computed outputs

const ACCOUNT = "123456789012";
const SUBSCRIPTION = "00000000-0000-0000-0000-000000000000";
const FAKE_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfakeOfflineCA\n-----END CERTIFICATE-----";

/** Short stable hex derived from a string (stands in for provider-generated suffixes and ids). */
export function fakeHex(seed: string, length = 8): string {
  let h = 0x811c9dc5;
  let out = "";
  while (out.length < length) {
    for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619) >>> 0;
    out += h.toString(16).padStart(8, "0");
    seed += "#";
  }
  return out.slice(0, length);
}

function fakeIp(seed: string, prefix = "10.40"): string {
  const h = parseInt(fakeHex(seed, 4), 16);
  return `${prefix}.${(h >> 8) % 250}.${(h & 255) % 250 || 10}`;
}

function fakePassword(seed: string, length: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  let out = "";
  let i = 0;
  while (out.length < length) {
    const hex = fakeHex(`${seed}:${i++}`, 8);
    for (let j = 0; j < 8 && out.length < length; j += 2)
      out += alphabet[parseInt(hex.slice(j, j + 2), 16) % 62];
  }
  return out;
}

function get(obj: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = obj[key];
  return isRecord(v) ? v : {};
}

interface MockContext {
  region: string;
  location: string;
  project: string;
}

/** Per-type computed outputs, merged over the inputs. Unlisted types echo their inputs and get an id. */
export function mockState(
  type: string,
  name: string,
  inputs: Record<string, unknown>,
  ctx: MockContext,
): { id: string; state: Record<string, unknown> } {
  const suffix = fakeHex(`${type}/${name}`, 7);
  const physical = `${name}-${suffix}`;
  const state: Record<string, unknown> = { ...inputs };
  let id = `${physical}-id`;
  const [pkg] = type.split(":");

  if (pkg === "kubernetes") {
    const metadata = { ...get(inputs, "metadata") };
    metadata.name ??= physical;
    metadata.uid = `${fakeHex(`uid/${type}/${name}`, 8)}-0000-4000-8000-${fakeHex(name, 12)}`;
    state.metadata = metadata;
    id = metadata.namespace
      ? `${String(metadata.namespace)}/${String(metadata.name)}`
      : String(metadata.name);
    return { id, state };
  }
  if (type.startsWith("pulumi:providers:")) return { id: `${physical}-provider-id`, state };
  if (type === "random:index/randomPassword:RandomPassword") {
    const length = typeof inputs.length === "number" ? inputs.length : 16;
    state.result = fakePassword(name, length);
    state.bcryptHash = `$2a$10$${fakePassword(`${name}/bcrypt`, 53)}`;
    return { id: "none", state };
  }

  if (pkg === "aws") {
    const arn = (service: string, resource: string) =>
      `arn:aws:${service}:${ctx.region}:${ACCOUNT}:${resource}`;
    state.region ??= ctx.region;
    switch (type) {
      case "aws:ec2/vpc:Vpc":
        id = `vpc-${fakeHex(name, 17)}`;
        state.arn = arn("ec2", `vpc/${id}`);
        break;
      case "aws:ec2/subnet:Subnet":
        id = `subnet-${fakeHex(name, 17)}`;
        state.arn = arn("ec2", `subnet/${id}`);
        break;
      case "aws:ec2/securityGroup:SecurityGroup":
        id = `sg-${fakeHex(name, 17)}`;
        state.arn = arn("ec2", `security-group/${id}`);
        break;
      case "aws:ec2/internetGateway:InternetGateway":
        id = `igw-${fakeHex(name, 17)}`;
        break;
      case "aws:ec2/natGateway:NatGateway":
        id = `nat-${fakeHex(name, 17)}`;
        break;
      case "aws:ec2/eip:Eip":
        id = `eipalloc-${fakeHex(name, 17)}`;
        state.publicIp = fakeIp(name, "52.18");
        break;
      case "aws:ec2/routeTable:RouteTable":
        id = `rtb-${fakeHex(name, 17)}`;
        break;
      case "aws:iam/role:Role":
        state.name ??= physical;
        id = String(state.name);
        state.arn = `arn:aws:iam::${ACCOUNT}:role/${String(state.name)}`;
        break;
      case "aws:kms/key:Key":
        id = `${fakeHex(name, 8)}-1234-4abc-8def-${fakeHex(name, 12)}`;
        state.keyId = id;
        state.arn = arn("kms", `key/${id}`);
        break;
      case "aws:eks/cluster:Cluster": {
        state.name ??= physical;
        id = String(state.name);
        state.arn = arn("eks", `cluster/${id}`);
        state.endpoint = `https://${fakeHex(name, 32).toUpperCase()}.gr7.${ctx.region}.eks.amazonaws.com`;
        state.certificateAuthority = { data: Buffer.from(FAKE_CA_PEM).toString("base64") };
        state.vpcConfig = {
          ...get(inputs, "vpcConfig"),
          clusterSecurityGroupId: `sg-${fakeHex(`${name}/eks`, 17)}`,
        };
        state.identities = [
          { oidcs: [{ issuer: `https://oidc.eks.${ctx.region}.amazonaws.com/id/${fakeHex(name, 32)}` }] },
        ];
        break;
      }
      case "aws:eks/nodeGroup:NodeGroup":
      case "aws:eks/addon:Addon":
        state.arn = arn("eks", `${type.split("/")[1].split(":")[0]}/${physical}`);
        break;
      case "aws:rds/subnetGroup:SubnetGroup":
      case "aws:rds/parameterGroup:ParameterGroup":
      case "aws:elasticache/subnetGroup:SubnetGroup":
        state.name ??= physical;
        id = String(state.name);
        state.arn = arn(pkg === "aws" && type.includes("rds") ? "rds" : "elasticache", `subgrp:${id}`);
        break;
      case "aws:rds/instance:Instance": {
        id = `db-${fakeHex(name, 26).toUpperCase()}`;
        state.identifier ??= physical;
        const address = `${String(state.identifier)}.c${fakeHex(name, 11)}.${ctx.region}.rds.amazonaws.com`;
        state.address = address;
        state.port = 5432;
        state.endpoint = `${address}:5432`;
        state.arn = arn("rds", `db:${String(state.identifier)}`);
        state.resourceId = id;
        break;
      }
      case "aws:elasticache/replicationGroup:ReplicationGroup": {
        id = physical;
        const domain = `${physical}.${fakeHex(name, 6)}.${ctx.region.replace(/-/g, "")}.cache.amazonaws.com`;
        state.primaryEndpointAddress = `master.${domain}`;
        state.readerEndpointAddress = `replica.${domain}`;
        state.port = inputs.port ?? 6379;
        state.arn = arn("elasticache", `replicationgroup:${physical}`);
        state.memberClusters = Array.from(
          { length: Number(inputs.numCacheClusters ?? 1) },
          (_, i) => `${physical}-00${i + 1}`,
        );
        break;
      }
      case "aws:efs/fileSystem:FileSystem":
        id = `fs-${fakeHex(name, 17)}`;
        state.arn = arn("elasticfilesystem", `file-system/${id}`);
        state.dnsName = `${id}.efs.${ctx.region}.amazonaws.com`;
        break;
      case "aws:efs/mountTarget:MountTarget":
        id = `fsmt-${fakeHex(name, 17)}`;
        state.ipAddress = fakeIp(name);
        break;
      default:
        break;
    }
    return { id, state };
  }

  if (pkg === "azure-native") {
    const [, mod, kind] = type.split(":");
    const rg = typeof inputs.resourceGroupName === "string" ? inputs.resourceGroupName : "llm-proxy-rg";
    const nameKeys: Record<string, string> = {
      "resources:ResourceGroup": "resourceGroupName",
      "network:VirtualNetwork": "virtualNetworkName",
      "network:Subnet": "subnetName",
      "network:PrivateEndpoint": "privateEndpointName",
      "privatedns:PrivateZone": "privateZoneName",
      "containerservice:ManagedCluster": "resourceName",
      "dbforpostgresql:Server": "serverName",
      "dbforpostgresql:Database": "databaseName",
      "dbforpostgresql:Configuration": "configurationName",
      "redisenterprise:RedisEnterprise": "clusterName",
      "redisenterprise:Database": "databaseName",
      "storage:StorageAccount": "accountName",
    };
    const nameKey = nameKeys[`${mod}:${kind}`];
    const explicit = nameKey ? inputs[nameKey] : undefined;
    const resourceName =
      typeof explicit === "string"
        ? explicit
        : type === "azure-native:storage:StorageAccount"
          ? `${name.replace(/[^a-z0-9]/g, "")}${suffix}`.slice(0, 24)
          : physical;
    state.name = resourceName;
    state.location ??= ctx.location;
    const base = `/subscriptions/${SUBSCRIPTION}/resourceGroups/${rg}/providers`;
    switch (type) {
      case "azure-native:resources:ResourceGroup":
        id = `/subscriptions/${SUBSCRIPTION}/resourceGroups/${resourceName}`;
        break;
      case "azure-native:network:Subnet":
        id = `${base}/Microsoft.Network/virtualNetworks/${String(inputs.virtualNetworkName)}/subnets/${resourceName}`;
        break;
      case "azure-native:containerservice:ManagedCluster":
        id = `${base}/Microsoft.ContainerService/managedClusters/${resourceName}`;
        state.identity = {
          ...get(inputs, "identity"),
          principalId: "11111111-2222-4333-8444-555555555555",
          tenantId: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
        };
        state.fqdn = `${String(inputs.dnsPrefix)}-${fakeHex(name, 8)}.hcp.${ctx.location}.azmk8s.io`;
        break;
      case "azure-native:dbforpostgresql:Server":
        id = `${base}/Microsoft.DBforPostgreSQL/flexibleServers/${resourceName}`;
        state.fullyQualifiedDomainName = `${resourceName}.postgres.database.azure.com`;
        break;
      case "azure-native:dbforpostgresql:Database":
      case "azure-native:dbforpostgresql:Configuration":
        id = `${base}/Microsoft.DBforPostgreSQL/flexibleServers/${String(inputs.serverName)}/${kind.toLowerCase()}s/${resourceName}`;
        break;
      case "azure-native:redisenterprise:RedisEnterprise":
        id = `${base}/Microsoft.Cache/redisEnterprise/${resourceName}`;
        state.hostName = `${resourceName}.${ctx.location}.redis.azure.net`;
        break;
      case "azure-native:redisenterprise:Database":
        id = `${base}/Microsoft.Cache/redisEnterprise/${String(inputs.clusterName)}/databases/${resourceName}`;
        state.port = inputs.port ?? 10000;
        break;
      case "azure-native:privatedns:PrivateZone":
        id = `${base}/Microsoft.Network/privateDnsZones/${resourceName}`;
        break;
      case "azure-native:storage:StorageAccount":
        id = `${base}/Microsoft.Storage/storageAccounts/${resourceName}`;
        state.primaryEndpoints = { file: `https://${resourceName}.file.core.windows.net/` };
        break;
      case "azure-native:authorization:ManagementLockByScope":
        id = `${String(inputs.scope)}/providers/Microsoft.Authorization/locks/${resourceName}`;
        break;
      case "azure-native:authorization:RoleAssignment":
        id = `${String(inputs.scope)}/providers/Microsoft.Authorization/roleAssignments/${fakeHex(name, 8)}-0000-4000-8000-${fakeHex(name, 12)}`;
        break;
      default:
        id = `${base}/Microsoft.${mod[0].toUpperCase()}${mod.slice(1)}/${kind[0].toLowerCase()}${kind.slice(1)}s/${resourceName}`;
        break;
    }
    state.id = id;
    return { id, state };
  }

  if (pkg === "gcp") {
    const project = typeof inputs.project === "string" ? inputs.project : ctx.project;
    const region = typeof inputs.region === "string" ? inputs.region : ctx.region;
    state.name ??= physical;
    state.project = project;
    const n = String(state.name);
    const selfLink = (p: string) => `https://www.googleapis.com/compute/v1/${p}`;
    switch (type) {
      case "gcp:compute/network:Network":
        id = `projects/${project}/global/networks/${n}`;
        state.selfLink = selfLink(id);
        break;
      case "gcp:compute/subnetwork:Subnetwork":
        id = `projects/${project}/regions/${region}/subnetworks/${n}`;
        state.selfLink = selfLink(id);
        state.gatewayAddress = "10.0.0.1";
        break;
      case "gcp:compute/globalAddress:GlobalAddress":
        id = `projects/${project}/global/addresses/${n}`;
        state.address = "10.100.0.0";
        state.selfLink = selfLink(id);
        break;
      case "gcp:compute/router:Router":
        id = `projects/${project}/regions/${region}/routers/${n}`;
        break;
      case "gcp:servicenetworking/connection:Connection":
        id = `${String(inputs.network)}:servicenetworking.googleapis.com`;
        state.peering = "servicenetworking-googleapis-com";
        break;
      case "gcp:container/cluster:Cluster":
        id = `projects/${project}/locations/${String(inputs.location)}/clusters/${n}`;
        state.endpoint = fakeIp(name, "34.76");
        state.masterAuth = { clusterCaCertificate: Buffer.from(FAKE_CA_PEM).toString("base64") };
        break;
      case "gcp:container/nodePool:NodePool":
        id = `projects/${project}/locations/${String(inputs.location)}/clusters/${String(inputs.cluster)}/nodePools/${n}`;
        break;
      case "gcp:sql/databaseInstance:DatabaseInstance":
        id = n;
        state.privateIpAddress = fakeIp(name, "10.100");
        state.connectionName = `${project}:${region}:${n}`;
        state.ipAddresses = [{ ipAddress: state.privateIpAddress, type: "PRIVATE" }];
        state.selfLink = `https://sqladmin.googleapis.com/sql/v1beta4/projects/${project}/instances/${n}`;
        state.serverCaCerts = [{ cert: FAKE_CA_PEM }];
        break;
      case "gcp:redis/instance:Instance":
        id = `projects/${project}/locations/${region}/instances/${n}`;
        state.host = fakeIp(name, "10.100");
        state.port = 6378;
        state.authString = `${fakeHex(`${name}/auth`, 8)}-${fakeHex(`${name}/auth2`, 4)}-4${fakeHex(name, 3)}-8${fakeHex(name, 3)}-${fakeHex(name, 12)}`;
        state.serverCaCerts = [{ cert: FAKE_CA_PEM, sha1Fingerprint: fakeHex(name, 40) }];
        state.currentLocationId = inputs.locationId ?? `${region}-b`;
        break;
      case "gcp:filestore/instance:Instance": {
        id = `projects/${project}/locations/${String(inputs.location)}/instances/${n}`;
        const nets = Array.isArray(inputs.networks) ? (inputs.networks as Record<string, unknown>[]) : [];
        state.networks = nets.map((net, i) => ({ ...net, ipAddresses: [fakeIp(`${name}/${i}`, "10.100")] }));
        break;
      }
      default:
        id = `projects/${project}/${n}`;
        break;
    }
    return { id, state };
  }
  return { id, state };
}

/** Mocked invokes (data sources). Anything else throws, so an unmocked call is never silently empty. */
export function mockCall(
  token: string,
  inputs: Record<string, unknown>,
  ctx: MockContext,
): Record<string, unknown> {
  switch (token) {
    case "azure-native:containerservice:listManagedClusterUserCredentials": {
      const cluster = String(inputs.resourceName);
      const kubeconfig = [
        "apiVersion: v1",
        "kind: Config",
        `clusters: [{name: ${cluster}, cluster: {server: "https://${cluster}.hcp.${ctx.location}.azmk8s.io:443", certificate-authority-data: ${Buffer.from(FAKE_CA_PEM).toString("base64")}}}]`,
        `contexts: [{name: ${cluster}, context: {cluster: ${cluster}, user: clusterUser}}]`,
        `current-context: ${cluster}`,
        `users: [{name: clusterUser, user: {token: offline-token}}]`,
      ].join("\n");
      return { kubeconfigs: [{ name: "clusterUser", value: Buffer.from(kubeconfig).toString("base64") }] };
    }
    case "azure-native:redisenterprise:listDatabaseKeys":
      return {
        primaryKey: fakePassword(`${String(inputs.clusterName)}/primary`, 44),
        secondaryKey: fakePassword(`${String(inputs.clusterName)}/secondary`, 44),
      };
    default:
      throw new Error(
        `offline-run: no mock for invoke ${token}. Add one to mockCall in scripts/offline-run.ts.`,
      );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Recording

/** Remove Pulumi's secret wrappers, collecting the dotted paths that were secret. */
export function unwrapSecrets(value: unknown, at = "", paths: string[] = []): unknown {
  if (Array.isArray(value))
    return value.map((v, i) => unwrapSecrets(v, at ? `${at}[${i}]` : `[${i}]`, paths));
  if (isRecord(value)) {
    if (SECRET_SIG in value && "value" in value) {
      paths.push(at);
      return unwrapSecrets(value.value, at, []);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = unwrapSecrets(v, at ? `${at}.${k}` : k, paths);
    return out;
  }
  return value;
}

/** The parts of the engine's RegisterResourceRequest protobuf we read. */
interface RegisterResourceRequestLike {
  getType(): string;
  getName(): string;
  getCustom(): boolean;
  getProtect(): boolean;
  getRetainondelete?(): boolean;
  getDeletebeforereplace?(): boolean;
  getIgnorechangesList?(): string[];
  getDependenciesList?(): string[];
  getProvider?(): string;
  getParent?(): string;
  getReplaceonchangesList?(): string[];
  getAdditionalsecretoutputsList?(): string[];
}

interface RegisterResourceResponseLike {
  getUrn?(): string;
}

interface MonitorLike {
  registerResource(
    req: RegisterResourceRequestLike,
    callback: (err: unknown, resp?: RegisterResourceResponseLike) => void,
  ): unknown;
}

interface RuntimeInternals {
  waitForRPCs?: () => Promise<void>;
}

function repoRoot(): string {
  return path.resolve(__dirname, "..");
}

/** Resolve an Output (or plain value) to its value; unknowns come back undefined. */
function resolveOutput(value: unknown): Promise<unknown> {
  if (!pulumi.Output.isInstance(value)) return Promise.resolve(value);
  return new Promise((resolve) => {
    (value as pulumi.Output<unknown>).apply((v) => {
      resolve(v);
      return v;
    });
  });
}

/** `main` may be a directory (`stacks/`): resolve its index file, as the nodejs host does. */
function resolveProgram(main: string): string {
  if (!fs.existsSync(main) || !fs.statSync(main).isDirectory()) return main;
  for (const f of ["index.ts", "index.js"]) if (fs.existsSync(path.join(main, f))) return path.join(main, f);
  return main;
}

async function defaultLoad(programPath: string): Promise<unknown> {
  const hasTsLoader = typeof require === "function" && typeof require.extensions?.[".ts"] === "function";
  if (hasTsLoader) {
    // Fresh module instances for this run (Pulumi resources are created at module load).
    const stacksDir = path.dirname(require.resolve(programPath));
    for (const k of Object.keys(require.cache)) if (k.startsWith(stacksDir)) delete require.cache[k];
    // The nodejs host `require`s the program too; a dynamic import would bypass ts-node's CJS hook.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(programPath) as unknown;
  }
  return (await import(programPath)) as unknown;
}

/**
 * Run the program for `stack` under recording mocks and return what it would create. See the file comment.
 */
export async function runProgramOffline(options: OfflineRunOptions): Promise<OfflineRunResult> {
  const projectDir = options.projectDir ?? repoRoot();
  const { project, config, secretKeys } = loadStackConfigFiles(projectDir, options.stack);
  for (const [k, v] of Object.entries(options.overrides ?? {})) setConfigValue(config, project, k, v);
  for (const [k, v] of Object.entries(options.secrets ?? {})) {
    const key = setConfigValue(config, project, k, v);
    if (!secretKeys.includes(key)) secretKeys.push(key);
  }
  const ctx: MockContext = {
    region: config["aws:region"] ?? config["gcp:region"] ?? "eu-west-1",
    location: config["azure-native:location"] ?? "westeurope",
    project: config["gcp:project"] ?? "offline-project",
  };
  if (options.stack === "gcp") ctx.region = config["gcp:region"] ?? "europe-west1";

  const byKey = new Map<string, RecordedResource>();
  const resources: RecordedResource[] = [];
  const invokes: RecordedInvoke[] = [];
  const record = (type: string, name: string): RecordedResource => {
    const key = `${type}::${name}`;
    let r = byKey.get(key);
    if (!r) {
      r = {
        type,
        name,
        urn: "",
        custom: true,
        id: undefined,
        inputs: {},
        secretInputs: [],
        outputs: {},
        options: {
          protect: false,
          retainOnDelete: false,
          deleteBeforeReplace: false,
          ignoreChanges: [],
          dependencies: [],
          provider: "",
          parent: "",
          replaceOnChanges: [],
          additionalSecretOutputs: [],
        },
      };
      byKey.set(key, r);
      resources.push(r);
    }
    return r;
  };

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const r = record(args.type, args.name);
        const secretPaths: string[] = [];
        const inputs = unwrapSecrets(args.inputs, "", secretPaths) as Record<string, unknown>;
        const { id, state } = mockState(args.type, args.name, inputs, ctx);
        r.custom = args.custom ?? true;
        r.id = id;
        r.inputs = inputs;
        r.secretInputs = secretPaths;
        r.outputs = state;
        return { id, state };
      },
      call(args) {
        const inputs = unwrapSecrets(args.inputs) as Record<string, unknown>;
        invokes.push({ token: args.token, inputs });
        return mockCall(args.token, inputs, ctx);
      },
    },
    project,
    options.stack,
    false,
  );

  // Resource options are not part of the mock's arguments: read them off the engine requests.
  const monitor = pulumi.runtime.getMonitor() as unknown as MonitorLike;
  const original = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, callback) => {
    const r = record(req.getType(), req.getName());
    r.custom = req.getCustom();
    r.options = {
      protect: req.getProtect(),
      retainOnDelete: req.getRetainondelete?.() ?? false,
      deleteBeforeReplace: req.getDeletebeforereplace?.() ?? false,
      ignoreChanges: req.getIgnorechangesList?.() ?? [],
      dependencies: req.getDependenciesList?.() ?? [],
      provider: req.getProvider?.() ?? "",
      parent: req.getParent?.() ?? "",
      replaceOnChanges: req.getReplaceonchangesList?.() ?? [],
      additionalSecretOutputs: req.getAdditionalsecretoutputsList?.() ?? [],
    };
    // The engine's response carries the real URN (with the parent chain), which dependencies refer to.
    return original(req, (err: unknown, resp?: RegisterResourceResponseLike) => {
      const urn = resp?.getUrn?.();
      if (urn) r.urn = urn;
      callback(err, resp);
    });
  };

  pulumi.runtime.setAllConfig(config, secretKeys);

  const projectFile = readProjectFile(projectDir);
  const programPath = resolveProgram(path.resolve(projectDir, projectFile.main ?? "."));
  const mod = (await (options.load ?? defaultLoad)(programPath)) as Record<string, unknown>;

  const exportsEntries = Object.entries(mod).filter(([k]) => k !== "default" && k !== "__esModule");
  const outputs: Record<string, unknown> = {};
  const secretOutputs: string[] = [];
  for (const [k, v] of exportsEntries) {
    outputs[k] = await resolveOutput(v);
    if (pulumi.Output.isInstance(v) && (await pulumi.isSecret(v as pulumi.Output<unknown>)))
      secretOutputs.push(k);
  }
  await (pulumi.runtime as unknown as RuntimeInternals).waitForRPCs?.();
  return { stack: options.stack, project, config, secretKeys, resources, invokes, outputs, secretOutputs };
}
