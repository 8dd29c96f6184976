// `npm run plan`, spawned the way a user runs it (ts-node, no Pulumi CLI, no credentials): the tree shows the
// settings that matter per cloud, overrides land, bad config exits non-zero with the program's message, the
// policy verdict is printed (and enforced with --strict), and --out writes valid Kubernetes YAML.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as apps from "kubernetes-models/apps/v1";
import * as autoscaling from "kubernetes-models/autoscaling/v2";
import * as networking from "kubernetes-models/networking.k8s.io/v1";
import * as policy from "kubernetes-models/policy/v1";
import * as storage from "kubernetes-models/storage.k8s.io/v1";
import * as core from "kubernetes-models/v1";
import { parseAllDocuments } from "yaml";
import { kubernetesObject, parseArgs, REDACTED, summarize, UsageError } from "../../scripts/plan";

const ROOT = path.resolve(__dirname, "../..");
const TS_NODE = path.join(ROOT, "node_modules/.bin/ts-node");

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `npm run plan -- <args>` without npm's own overhead (the script is `ts-node --transpile-only scripts/plan.ts`). */
function plan(args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(TS_NODE, ["--transpile-only", "scripts/plan.ts", ...args], { cwd: ROOT });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** kubernetes-models (k8s 1.27 schemas) by apiVersion, for the objects the program creates. */
const MODELS: Record<string, Record<string, unknown>> = {
  v1: core,
  "apps/v1": apps,
  "autoscaling/v2": autoscaling,
  "networking.k8s.io/v1": networking,
  "policy/v1": policy,
  "storage.k8s.io/v1": storage,
};

const line = (out: string, needle: string): string => out.split("\n").find((l) => l.includes(needle)) ?? "";

const outDir = mkdtempSync(path.join(os.tmpdir(), "plan-out-"));
let aws: Result;
let azure: Result;
let gcpOverridden: Result;
let badConfig: Result;

beforeAll(async () => {
  // Four program runs in parallel: each is a separate process (Pulumi keeps its state in globals).
  [aws, azure, gcpOverridden, badConfig] = await Promise.all([
    plan(["aws", "--out", outDir]),
    plan(["azure"]),
    plan([
      "gcp",
      "--config",
      "llm-proxy:minReplicas=4",
      "--config",
      "llm-proxy:maxReplicas=10",
      "--config",
      "pdbMinAvailable=3",
      "--config",
      "llm-proxy:allowNonHa=true",
      "--config",
      "llm-proxy:postgresHa=false",
      "--strict",
    ]),
    plan(["aws", "--config", "llm-proxy:minReplicas=2", "--config", "llm-proxy:pdbMinAvailable=2"]),
  ]);
}, 300_000);

afterAll(() => rmSync(outDir, { recursive: true, force: true }));

describe("npm run plan -- aws --out <dir>", () => {
  it("exits 0 and prints the tree with the settings that matter", () => {
    expect(aws.stderr).not.toMatch(/error/i);
    expect(aws.code).toBe(0);
    expect(aws.stdout).toMatch(/^Plan for stack "aws" \(project llm-proxy\): \d+ resources/);
    const db = line(aws.stdout, "aws:rds/instance:Instance");
    expect(db).toContain("[protected]");
    expect(db).toContain("multi-AZ on");
    expect(db).toContain("encrypted on");
    expect(db).toContain("backups 14d");
    expect(line(aws.stdout, "aws:elasticache/replicationGroup")).toMatch(
      /failover on · multi-AZ on · TLS on .*AUTH on/,
    );
    expect(line(aws.stdout, "aws:efs/fileSystem:FileSystem")).toMatch(/encrypted on · Regional/);
    // One node group per zone (three zones): each may grow to the cluster cap, the autoscaler caps the total.
    expect(aws.stdout.split("\n").filter((l) => l.includes("aws:eks/nodeGroup:NodeGroup"))).toHaveLength(3);
    expect(line(aws.stdout, "aws:eks/nodeGroup:NodeGroup")).toContain("m6i.xlarge · nodes 1..12 (desired 1)");
    expect(line(aws.stdout, "HorizontalPodAutoscaler")).toMatch(/replicas 3\.\.24 · cpu 70%/);
    expect(line(aws.stdout, "PodDisruptionBudget")).toContain("minAvailable 2");
    expect(line(aws.stdout, "kubernetes:apps/v1:Deployment  llm-proxy-deployment")).toMatch(
      /workers 2 .*memory 512Mi\/768Mi/,
    );
    // Chroma is a StatefulSet of one (at most one server on its files), not a Deployment.
    expect(line(aws.stdout, "kubernetes:apps/v1:StatefulSet  llm-proxy-chroma")).toMatch(
      /llm-proxy\/llm-proxy-chroma · replicas 1 · image chromadb\/chroma:/,
    );
    expect(aws.stdout).not.toContain("kubernetes:apps/v1:Deployment  llm-proxy-chroma");
    // Children are drawn under their component.
    expect(aws.stdout).toMatch(/^llm-proxy:aws:Postgres {2}llm-proxy-pg\n(├─|└─) /m);
  });

  it("masks secret outputs and never prints a Secret's values", () => {
    expect(line(aws.stdout, "masterKeySecret:")).toBe("  masterKeySecret: [secret]");
    expect(line(aws.stdout, "kubeconfig:")).toBe("  kubeconfig: [secret]");
    expect(aws.stdout).not.toMatch(/postgres(ql)?:\/\/|rediss:\/\//);
    expect(line(aws.stdout, "kubernetes:core/v1:Secret  llm-proxy-secret")).toMatch(/keys .*DATABASE_URL/);
    // The config file is a Secret too (proxyConfig may hold secrets): its keys are listed, never its text.
    expect(line(aws.stdout, "kubernetes:core/v1:Secret  llm-proxy-config-file")).toMatch(
      /keys config\.yaml$/,
    );
    expect(aws.stdout).not.toContain("api_key_env");
  });

  it("reports the policy pack's verdict", () => {
    expect(aws.stdout).toMatch(/Policy pack \(policy\/\): \d+ rules, no violations\./);
  });

  it("writes every Kubernetes object as YAML, valid against the Kubernetes schema", () => {
    const files = readdirSync(outDir, { recursive: true })
      .map((f) => path.join(outDir, String(f)))
      .filter((f) => statSync(f).isFile());
    expect(aws.stdout).toContain(`Wrote ${files.length} Kubernetes objects to ${outDir}`);
    const kinds: string[] = [];
    for (const file of files) {
      const docs = parseAllDocuments(readFileSync(file, "utf8"));
      expect(docs, file).toHaveLength(1);
      const object = docs[0].toJS() as { apiVersion: string; kind: string; metadata: { name?: string } };
      expect(object.metadata.name, file).toBeTruthy();
      const Model = MODELS[object.apiVersion]?.[object.kind] as
        (new (o: unknown) => { validate(): void }) | undefined;
      expect(Model, `${object.apiVersion} ${object.kind} has a schema`).toBeDefined();
      expect(() => new Model!(object).validate(), file).not.toThrow();
      kinds.push(object.kind);
    }
    expect(kinds).toEqual(
      expect.arrayContaining([
        "Namespace",
        "StorageClass",
        "ConfigMap",
        "Secret",
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "NetworkPolicy",
      ]),
    );
    const secret = files.find((f) => /-secret-/.test(f))!;
    const text = readFileSync(secret, "utf8");
    expect(text).toContain(REDACTED);
    expect(text).not.toMatch(/postgres(ql)?:\/\/|rediss:\/\//);
  });
});

describe("npm run plan -- azure", () => {
  it("shows zone-redundant PostgreSQL, HA Redis and ZRS files", () => {
    expect(azure.code).toBe(0);
    expect(line(azure.stdout, "azure-native:dbforpostgresql:Server")).toMatch(
      /\[protected\].*HA ZoneRedundant/,
    );
    expect(line(azure.stdout, "azure-native:storage:StorageAccount")).toContain("FileStorage · Premium_ZRS");
    // One autoscaled user pool per zone, each up to nodeMaxCount.
    const pools = azure.stdout
      .split("\n")
      .filter((l) => l.includes("azure-native:containerservice:AgentPool"));
    expect(pools).toHaveLength(3);
    for (const [i, l] of pools.entries()) expect(l).toMatch(new RegExp(`nodes 1\\.\\.12 · zones ${i + 1}$`));
    expect(azure.stdout).toMatch(/azure-native:(redisenterprise:RedisEnterprise|redis:Redis) .*/);
    expect(azure.stdout).toMatch(/no violations/);
  });
});

describe("npm run plan -- gcp with overrides", () => {
  it("applies --config overrides like pulumi config set (bare keys are project keys)", () => {
    expect(gcpOverridden.stdout).toContain(
      "with llm-proxy:minReplicas=4 llm-proxy:maxReplicas=10 pdbMinAvailable=3",
    );
    expect(line(gcpOverridden.stdout, "HorizontalPodAutoscaler")).toContain("replicas 4..10");
    expect(line(gcpOverridden.stdout, "PodDisruptionBudget")).toContain("minAvailable 3");
    expect(line(gcpOverridden.stdout, "gcp:sql/databaseInstance")).toContain("availability ZONAL");
  });

  it("lists the policy violations and, with --strict, exits 3", () => {
    expect(gcpOverridden.stdout).toMatch(/Policy pack \(policy\/\): \d+ violation\(s\):/);
    expect(gcpOverridden.stdout).toMatch(
      /✗ postgres-high-availability on gcp:sql\/databaseInstance:DatabaseInstance::\S+: Cloud SQL must set settings.availabilityType: REGIONAL/,
    );
    expect(gcpOverridden.code).toBe(3);
  });
});

describe("bad config", () => {
  it("exits 2 with the program's message naming the key and the fix", () => {
    expect(badConfig.code).toBe(2);
    expect(badConfig.stderr).toContain("plan: stack aws has a configuration error:");
    expect(badConfig.stderr).toMatch(/pdbMinAvailable.*minReplicas/);
    expect(badConfig.stdout).toBe("");
  });
});

describe("plan internals", () => {
  it("parses arguments and rejects bad ones", () => {
    expect(
      parseArgs([
        "gcp",
        "-c",
        "a=b=c",
        "--config=x=1",
        "--secret",
        "openaiApiKey=sk",
        "--out",
        "o",
        "--strict",
      ]),
    ).toEqual({
      stack: "gcp",
      overrides: { a: "b=c", x: "1" },
      secrets: { openaiApiKey: "sk" },
      out: "o",
      strict: true,
    });
    expect(() => parseArgs([])).toThrow(UsageError);
    expect(() => parseArgs(["moon"])).toThrow(/Unknown stack "moon"/);
    expect(() => parseArgs(["aws", "--config", "novalue"])).toThrow(/key=value/);
    expect(() => parseArgs(["aws", "--bogus"])).toThrow(/Unknown option --bogus/);
  });

  it("summarizes settings and keeps secret values out", () => {
    expect(
      summarize({
        type: "kubernetes:core/v1:Secret",
        inputs: { stringData: { DATABASE_URL: "postgres://u:p@h/db" } },
        outputs: {},
      }),
    ).toBe("keys DATABASE_URL");
    expect(
      summarize({
        type: "gcp:redis/instance:Instance",
        inputs: {
          tier: "STANDARD_HA",
          memorySizeGb: 5,
          authEnabled: true,
          transitEncryptionMode: "SERVER_AUTHENTICATION",
        },
        outputs: {},
      }),
    ).toBe("STANDARD_HA · memory 5GB · TLS SERVER_AUTHENTICATION · AUTH on");
  });

  it("renders auto-named objects with the provider's name and redacts Secret data", () => {
    const base = { urn: "u", custom: true, id: "x", secretInputs: [] };
    const options = {
      protect: false,
      retainOnDelete: false,
      deleteBeforeReplace: false,
      ignoreChanges: [],
      dependencies: [],
      provider: "",
      parent: "",
      replaceOnChanges: [],
      additionalSecretOutputs: [],
    };
    const secret = kubernetesObject({
      ...base,
      options,
      type: "kubernetes:core/v1:Secret",
      name: "s",
      inputs: { apiVersion: "v1", kind: "Secret", metadata: { namespace: "n" }, data: { K: "c2VjcmV0" } },
      outputs: { metadata: { name: "s-1234", namespace: "n", uid: "u" } },
    });
    expect(secret).toEqual({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { namespace: "n", name: "s-1234" },
      data: { K: REDACTED },
    });
    expect(
      kubernetesObject({
        ...base,
        options,
        type: "aws:s3/bucket:Bucket",
        name: "b",
        inputs: {},
        outputs: {},
      }),
    ).toBeUndefined();
  });
});
