// The GitHub Actions workflows, parsed: CI runs the tests against real PostgreSQL/Redis; preview and
// deploy cover exactly the stacks that have a Pulumi.<stack>.yaml, run the policy pack, log in to each
// cloud with OIDC, and deploy the image built in the same run behind an approval environment.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

const ROOT = path.resolve(__dirname, "../..");
const WORKFLOWS = path.join(ROOT, ".github/workflows");

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  if?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Job {
  "runs-on"?: string;
  needs?: string | string[];
  if?: string;
  uses?: string;
  services?: Record<string, { image: string; ports?: string[]; env?: Record<string, string> }>;
  strategy?: { matrix?: { stack?: string[] } };
  environment?: { name: string } | string;
  permissions?: Record<string, string>;
  env?: Record<string, string>;
  outputs?: Record<string, string>;
  steps?: Step[];
}
interface Workflow {
  name: string;
  on: Record<string, unknown>;
  permissions?: Record<string, string>;
  jobs: Record<string, Job>;
}

const load = (file: string): Workflow => parse(readFileSync(path.join(WORKFLOWS, file), "utf8")) as Workflow;
const stepUsing = (job: Job, action: string): Step[] =>
  (job.steps ?? []).filter((s) => s.uses?.startsWith(`${action}@`));

/** Stack names from the Pulumi.<stack>.yaml files at the repository root. */
const stackFiles = (): string[] =>
  readdirSync(ROOT)
    .map((f) => /^Pulumi\.([^.]+)\.yaml$/.exec(f)?.[1])
    .filter((s): s is string => Boolean(s))
    .sort();

const ci = load("ci.yml");
const preview = load("preview.yml");
const deploy = load("deploy.yml");

describe("every workflow", () => {
  it.each(readdirSync(WORKFLOWS).filter((f) => /\.ya?ml$/.test(f)))(
    "%s pins each action to a release",
    (file) => {
      const wf = load(file);
      for (const job of Object.values(wf.jobs)) {
        for (const step of job.steps ?? []) {
          if (step.uses)
            expect(step.uses, `${file}: ${step.uses}`).toMatch(/^[\w.-]+\/[\w./-]+@v\d+(\.\d+)*$/);
        }
      }
    },
  );

  it("are exactly ci, preview and deploy", () => {
    expect(readdirSync(WORKFLOWS).sort()).toEqual(["ci.yml", "deploy.yml", "preview.yml"]);
  });
});

describe("ci.yml", () => {
  it("runs on pull requests and on main, and can be called by deploy", () => {
    expect(Object.keys(ci.on).sort()).toEqual(["pull_request", "push", "workflow_call"]);
    expect(ci.on.push).toEqual({ branches: ["main"] });
  });

  it("runs npm ci then npm test next to PostgreSQL 15 and Redis 7 on the ports the tests use", () => {
    const job = ci.jobs.test;
    const runs = (job.steps ?? []).map((s) => s.run ?? "");
    const install = runs.findIndex((r) => /^npm ci\b/.test(r));
    expect(install).toBeGreaterThanOrEqual(0);
    expect(runs.indexOf("npm test")).toBeGreaterThan(install);
    expect(job.services?.postgres.image).toBe("postgres:15");
    expect(job.services?.postgres.ports).toEqual(["5432:5432"]);
    expect(job.services?.postgres.env?.POSTGRES_HOST_AUTH_METHOD).toBe("trust"); // tests connect as postgres without a password
    expect(job.services?.redis.image).toBe("redis:7");
    expect(job.services?.redis.ports).toEqual(["6379:6379"]);
    expect(stepUsing(job, "actions/setup-node")[0].with?.["node-version"]).toBe(20);
  });

  it("provides the binaries the fault tests start their throwaway servers from", () => {
    const steps = ci.jobs.test.steps ?? [];
    const binaries = steps.findIndex(
      (s) => s.run?.includes("apt-get install") && s.run.includes("redis-server"),
    );
    expect(binaries).toBeGreaterThanOrEqual(0);
    expect(steps[binaries].run).toContain("PGBIN=");
    expect(binaries).toBeLessThan(steps.findIndex((s) => s.run === "npm test"));
  });

  it("builds the Dockerfile without pushing, then smoke-tests the container", () => {
    const steps = ci.jobs.image.steps ?? [];
    const build = stepUsing(ci.jobs.image, "docker/build-push-action")[0];
    expect(build.with).toMatchObject({ context: ".", push: false, load: true });
    const smoke = steps.find((s) => s.run?.includes("docker run"))?.run ?? "";
    expect(steps.indexOf(build)).toBeLessThan(steps.findIndex((s) => s.run === smoke));
    for (const part of [
      "/readyz",
      "/internal/keys",
      "/v1/chat/completions",
      "mock-chat",
      "docker stop",
      "id -u",
    ]) {
      expect(smoke).toContain(part);
    }
  });
});

describe("stack matrix", () => {
  it("the repository has stack files", () => {
    expect(stackFiles().length, "no Pulumi.<stack>.yaml at the repository root").toBeGreaterThan(0);
  });

  it.each([
    ["preview.yml", preview, "preview"],
    ["deploy.yml", deploy, "up"],
  ] as const)("%s covers exactly the Pulumi.<stack>.yaml files", (_file, wf, job) => {
    expect([...(wf.jobs[job].strategy?.matrix?.stack ?? [])].sort()).toEqual(stackFiles());
  });
});

/** Checks the per-cloud OIDC login steps of a job; `role` picks the preview or deploy identity. */
function expectOidcLogins(job: Job, role: "PREVIEW" | "DEPLOY") {
  const aws = stepUsing(job, "aws-actions/configure-aws-credentials");
  expect(aws).toHaveLength(1);
  expect(aws[0].if).toBe("matrix.stack == 'aws'");
  expect(aws[0].with?.["role-to-assume"]).toBe(`\${{ vars.AWS_${role}_ROLE_ARN }}`);
  expect(aws[0].with).not.toHaveProperty("aws-access-key-id");

  const azure = stepUsing(job, "azure/login");
  expect(azure).toHaveLength(1);
  expect(azure[0].if).toBe("matrix.stack == 'azure'");
  expect(Object.keys(azure[0].with ?? {}).sort()).toEqual(["client-id", "subscription-id", "tenant-id"]);
  expect(azure[0].with?.["client-id"]).toBe(`\${{ vars.AZURE_${role}_CLIENT_ID }}`);
  const armOidc = (job.steps ?? []).find((s) => s.run?.includes("ARM_USE_OIDC=true"));
  expect(armOidc?.if).toBe("matrix.stack == 'azure'");

  const gcp = stepUsing(job, "google-github-actions/auth");
  expect(gcp).toHaveLength(1);
  expect(gcp[0].if).toBe("matrix.stack == 'gcp'");
  expect(gcp[0].with?.workload_identity_provider).toBe("${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}");
  expect(gcp[0].with).not.toHaveProperty("credentials_json");

  // The logins come before Pulumi runs, and every cloud in the matrix has one.
  const steps = job.steps ?? [];
  const pulumiAt = steps.findIndex((s) => s.uses?.startsWith("pulumi/actions@"));
  for (const login of [aws[0], azure[0], gcp[0]]) expect(steps.indexOf(login)).toBeLessThan(pulumiAt);
  for (const stack of job.strategy?.matrix?.stack ?? []) {
    expect(
      steps.some((s) => s.if === `matrix.stack == '${stack}'`),
      `login for ${stack}`,
    ).toBe(true);
  }
}

describe("preview.yml", () => {
  const job = preview.jobs.preview;
  const pulumi = stepUsing(job, "pulumi/actions");

  it("runs on pull requests touching the program, the stack files or the policies", () => {
    expect(Object.keys(preview.on)).toEqual(["pull_request"]);
    const paths = (preview.on.pull_request as { paths: string[] }).paths;
    expect(paths).toEqual(expect.arrayContaining(["stacks/**", "Pulumi.yaml", "Pulumi.*.yaml", "policy/**"]));
  });

  it("previews each stack with the policy pack and comments on the PR", () => {
    expect(pulumi).toHaveLength(1);
    expect(pulumi[0].with).toMatchObject({
      command: "preview",
      policyPacks: "policy",
      "comment-on-pr": true,
    });
    expect(String(pulumi[0].with?.["stack-name"])).toContain("matrix.stack");
    expect(preview.permissions).toMatchObject({ "pull-requests": "write", "id-token": "write" });
    expect(job.env?.PULUMI_ACCESS_TOKEN).toBe("${{ secrets.PULUMI_ACCESS_TOKEN }}");
  });

  it("installs the dependencies the program and the policy pack load", () => {
    const steps = job.steps ?? [];
    const install = steps.findIndex((s) => s.run?.startsWith("npm ci"));
    expect(install).toBeGreaterThanOrEqual(0);
    expect(install).toBeLessThan(steps.indexOf(pulumi[0]));
  });

  it("logs in to each cloud with OIDC (no stored keys)", () => expectOidcLogins(job, "PREVIEW"));
});

describe("deploy.yml", () => {
  const up = deploy.jobs.up;
  const pulumi = stepUsing(up, "pulumi/actions");

  it("runs on main (and by hand for rollbacks)", () => {
    expect(deploy.on.push).toEqual({ branches: ["main"] });
    expect(deploy.on).toHaveProperty("workflow_dispatch.inputs.image");
  });

  it("tests, then builds and pushes the image to GHCR", () => {
    expect(deploy.jobs.test.uses).toBe("./.github/workflows/ci.yml");
    const image = deploy.jobs.image;
    expect(image.needs).toBe("test");
    expect(image.permissions).toMatchObject({ packages: "write" });
    expect(stepUsing(image, "docker/login-action")[0].with?.registry).toBe("ghcr.io");
    const build = stepUsing(image, "docker/build-push-action")[0];
    expect(build.with?.push).toBe(true);
    expect(image.outputs?.image).toBeDefined();
  });

  it("runs pulumi up per stack behind the stack's GitHub environment, with the policy pack", () => {
    expect(up.needs).toBe("image");
    expect(up.environment).toEqual({ name: "${{ matrix.stack }}" });
    expect(pulumi).toHaveLength(1);
    expect(pulumi[0].with).toMatchObject({ command: "up", policyPacks: "policy" });
    expect(String(pulumi[0].with?.["stack-name"])).toContain("matrix.stack");
    expect(up.permissions).toMatchObject({ "id-token": "write" });
  });

  it("passes the image built in this run (by digest) as llm-proxy:image", () => {
    expect(up.env?.IMAGE).toBe("${{ needs.image.outputs.image || inputs.image }}");
    const configMap = parse(
      String(pulumi[0].with?.["config-map"]).replace("${{ env.IMAGE }}", "ghcr.io/o/r@sha256:abc"),
    );
    expect(configMap).toEqual({ "llm-proxy:image": { value: "ghcr.io/o/r@sha256:abc", secret: false } });
    const ref = (deploy.jobs.image.steps ?? []).find((s) => s.run?.includes("steps.build.outputs.digest"));
    expect(ref?.run).toContain("@${{ steps.build.outputs.digest }}");
  });

  it("logs in to each cloud with OIDC (no stored keys)", () => expectOidcLogins(up, "DEPLOY"));
});
