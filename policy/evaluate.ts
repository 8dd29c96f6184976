// Runs the pack's rules offline, without the Pulumi engine: over resources recorded by a mocked program
// run (scripts/plan.ts, test/delivery) or over hand-written inputs in tests. It builds the same argument
// bags the analyzer hands to validateResource / validateStack (see @pulumi/policy's policy.d.ts).
import type {
  PolicyResource,
  PolicyResourceOptions,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationPolicy,
} from "@pulumi/policy";
import { resourcePolicies, stackPolicies } from "./rules";

/** One resource as a program run registered it. */
export interface RecordedResource {
  type: string;
  name: string;
  urn?: string;
  /** Resource inputs (what resource policies see). */
  inputs: Record<string, unknown>;
  /** Resource outputs (what stack policies see); merged over the inputs. */
  outputs?: Record<string, unknown>;
  /** Resource options; only `protect` matters to the rules. */
  options?: { protect?: boolean; ignoreChanges?: string[]; parent?: string };
}

export interface Violation {
  policy: string;
  /** `type::name` of the offending resource, absent for stack-wide violations. */
  resource?: string;
  message: string;
}

// Pulumi's wire markers: a secret is {[SECRET_SIG]: SECRET_VALUE, value}; policies see plain values.
const SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Replaces serialized secrets by their plain values, recursively (the analyzer does the same). */
export function unwrapSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(unwrapSecrets);
  if (!isPlainObject(value)) return value;
  if (value[SIG_KEY] === SECRET_SIG) return unwrapSecrets(value.value);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unwrapSecrets(v)]));
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(base[k], v);
  return out;
}

const urnOf = (r: RecordedResource): string => r.urn ?? `urn:pulumi:offline::llm-proxy::${r.type}::${r.name}`;

const optionsOf = (r: RecordedResource): PolicyResourceOptions => ({
  protect: r.options?.protect ?? false,
  ignoreChanges: r.options?.ignoreChanges ?? [],
  aliases: [],
  customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
  additionalSecretOutputs: [],
  parent: r.options?.parent,
});

/** The policy's config with its schema defaults filled in, as the analyzer passes it. */
function configFor(policy: ResourceValidationPolicy | StackValidationPolicy, overrides: object = {}): object {
  const defaults: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(policy.configSchema?.properties ?? {})) {
    if (isPlainObject(schema) && "default" in schema) defaults[key] = schema.default;
  }
  return { ...defaults, ...overrides };
}

class NotApplicable extends Error {}

const typeOf = (cls: unknown): string | undefined => (cls as { __pulumiType?: string }).__pulumiType;

/** Runs one resource policy over one resource; returns the violation messages. */
export async function runResourcePolicy(
  policy: ResourceValidationPolicy,
  resource: RecordedResource,
  config: object = {},
): Promise<string[]> {
  const props = unwrapSecrets(resource.inputs) as Record<string, unknown>;
  const messages: string[] = [];
  const args: ResourceValidationArgs = {
    type: resource.type,
    name: resource.name,
    urn: urnOf(resource),
    props,
    opts: optionsOf(resource),
    stackTags: new Map(),
    isType: (cls) => typeOf(cls) === resource.type,
    asType: ((cls: unknown) =>
      typeOf(cls) === resource.type ? props : undefined) as ResourceValidationArgs["asType"],
    getConfig: <T extends object>() => configFor(policy, config) as T,
    notApplicable: (reason?: string): never => {
      throw new NotApplicable(reason);
    },
  };
  const validators = policy.validateResource
    ? Array.isArray(policy.validateResource)
      ? policy.validateResource
      : [policy.validateResource]
    : [];
  for (const validate of validators) {
    try {
      await validate(args, (message) => messages.push(message));
    } catch (err) {
      if (!(err instanceof NotApplicable)) throw err;
    }
  }
  return messages;
}

/** Runs one stack policy over all resources; returns its violations. */
export async function runStackPolicy(
  policy: StackValidationPolicy,
  resources: RecordedResource[],
  config: object = {},
): Promise<Violation[]> {
  const byUrn = new Map<string, RecordedResource>();
  const policyResources: PolicyResource[] = resources.map((r) => {
    byUrn.set(urnOf(r), r);
    const props = unwrapSecrets(deepMerge(r.inputs, r.outputs)) as Record<string, unknown>;
    return {
      type: r.type,
      name: r.name,
      urn: urnOf(r),
      props,
      opts: optionsOf(r),
      dependencies: [],
      propertyDependencies: {},
      isType: (cls) => typeOf(cls) === r.type,
      asType: ((cls: unknown) => (typeOf(cls) === r.type ? props : undefined)) as PolicyResource["asType"],
    };
  });
  const violations: Violation[] = [];
  try {
    await policy.validateStack(
      {
        resources: policyResources,
        stackTags: new Map(),
        getConfig: <T extends object>() => configFor(policy, config) as T,
        notApplicable: (reason?: string): never => {
          throw new NotApplicable(reason);
        },
      },
      (message, urn) => {
        const r = urn ? byUrn.get(urn) : undefined;
        violations.push({ policy: policy.name, resource: r ? `${r.type}::${r.name}` : undefined, message });
      },
    );
  } catch (err) {
    if (!(err instanceof NotApplicable)) throw err;
  }
  return violations;
}

/** Every rule of the pack over every resource; an empty array means the stack complies. */
export async function evaluatePolicies(resources: RecordedResource[]): Promise<Violation[]> {
  const violations: Violation[] = [];
  for (const resource of resources) {
    for (const policy of resourcePolicies) {
      for (const message of await runResourcePolicy(policy, resource)) {
        violations.push({ policy: policy.name, resource: `${resource.type}::${resource.name}`, message });
      }
    }
  }
  for (const policy of stackPolicies) violations.push(...(await runStackPolicy(policy, resources)));
  return violations;
}
