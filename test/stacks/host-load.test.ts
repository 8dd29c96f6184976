/**
 * `pulumi up` would start the program: load it exactly as the Pulumi CLI's nodejs host does (ts-node with the
 * project's tsconfig and type-checking on, `main: stacks/` from Pulumi.yaml, `require` of the directory) in a
 * separate Node process, under mocks, and check that it registers the stack's resources.
 */
import { execFile } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const root = path.resolve(__dirname, "../..");

describe("program loads like the Pulumi nodejs host loads it", () => {
  it("ts-node (type-checking, project tsconfig) + require('stacks/') registers every resource", async () => {
    const env = { ...process.env };
    delete env.PULUMI_NODEJS_TRANSPILE_ONLY;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [path.join(__dirname, "fixtures/pulumi-host.cjs"), "gcp"],
      { cwd: root, env, maxBuffer: 16 * 1024 * 1024, timeout: 240_000 },
    );
    const out = JSON.parse(stdout);
    expect(out.program).toBe(path.join(root, "stacks/"));
    expect(out.typeCheck).toBe(true);
    expect(out.tsNode).toMatch(/^10\./);
    expect(out.typescript).toMatch(/^5\./);
    expect(out.resources).toEqual(
      expect.arrayContaining([
        "llm-proxy:gcp:Cluster",
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:redis/instance:Instance",
        "gcp:filestore/instance:Instance",
        "kubernetes:apps/v1:Deployment",
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "kubernetes:policy/v1:PodDisruptionBudget",
      ]),
    );
    expect(out.resources.length).toBeGreaterThan(35);
    expect(out.outputs).toEqual(expect.arrayContaining(["proxyUrl", "databaseEndpoint", "kubeconfig"]));
  }, 300_000);
});
