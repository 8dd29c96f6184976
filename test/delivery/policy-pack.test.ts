// The policy pack loaded exactly as `pulumi preview --policy-pack policy` loads it: the CLI's nodejs host
// (`@pulumi/pulumi/cmd/run-policy-pack`, ts-node with type checking) runs policy/ with policy/ as the working
// directory, and the pack serves the analyzer gRPC API. We then talk to it like the engine does.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as analyzerRpc from "@pulumi/pulumi/proto/analyzer_grpc_pb";
import * as analyzerPb from "@pulumi/pulumi/proto/analyzer_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { policies } from "../../policy/rules";
import { good, patched } from "./policy-fixtures";

const ROOT = path.resolve(__dirname, "../..");

let pack: ChildProcess;
let client: analyzerRpc.AnalyzerClient;
let stderr = "";

beforeAll(async () => {
  pack = spawn(
    process.execPath,
    [path.join(ROOT, "node_modules/@pulumi/pulumi/cmd/run-policy-pack"), "127.0.0.1:1", "."],
    { cwd: path.join(ROOT, "policy"), stdio: ["ignore", "pipe", "pipe"] },
  );
  pack.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  // The pack prints its port once the analyzer server listens (after ts-node has type-checked it).
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    pack.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\s*$/m.exec(out);
      if (m) resolve(Number(m[1]));
    });
    pack.on("exit", (code) => reject(new Error(`policy pack exited ${code}: ${stderr}`)));
  });
  client = new analyzerRpc.AnalyzerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}, 400_000);

afterAll(() => {
  client?.close();
  pack?.kill("SIGKILL");
});

const call = <Req, Res>(
  fn: (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => void,
  req: Req,
) =>
  new Promise<Res>((resolve, reject) =>
    fn.call(client, req, (err, res) => (err ? reject(err) : resolve(res))),
  );

function options(protect: boolean): analyzerPb.AnalyzerResourceOptions {
  return new analyzerPb.AnalyzerResourceOptions().setProtect(protect);
}

async function analyze(r: {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  options?: { protect?: boolean };
}) {
  const req = new analyzerPb.AnalyzeRequest()
    .setType(r.type)
    .setName(r.name)
    .setUrn(`urn:pulumi:test::llm-proxy::${r.type}::${r.name}`)
    .setProperties(Struct.fromJavaScript(r.inputs as Record<string, never>))
    .setOptions(options(r.options?.protect ?? false));
  const res = await call<analyzerPb.AnalyzeRequest, analyzerPb.AnalyzeResponse>(client.analyze, req);
  return res.getDiagnosticsList().map((d) => ({ policy: d.getPolicyname(), message: d.getMessage() }));
}

describe("policy pack served by the Pulumi nodejs host", () => {
  it("advertises every rule, mandatory", async () => {
    const info = await call<Empty, analyzerPb.AnalyzerInfo>(client.getAnalyzerInfo, new Empty());
    expect(info.getName()).toBe("llm-proxy");
    expect(info.getVersion()).toBe("0.1.0");
    const advertised = info.getPoliciesList().map((p) => p.getName());
    expect(advertised.sort()).toEqual(policies.map((p) => p.name).sort());
    for (const p of info.getPoliciesList())
      expect(p.getEnforcementlevel()).toBe(analyzerPb.EnforcementLevel.MANDATORY);
  });

  it("passes a compliant resource and reports a broken one", async () => {
    expect(await analyze(good.cloudSql)).toEqual([]);
    const broken = patched(
      patched(good.cloudSql, "settings.availabilityType", "ZONAL"),
      "options.protect",
      false,
    );
    expect(await analyze(broken)).toEqual(
      expect.arrayContaining([
        { policy: "postgres-high-availability", message: expect.stringMatching(/REGIONAL/) },
        { policy: "postgres-deletion-protected", message: expect.stringMatching(/protect: true/) },
      ]),
    );
  });

  it("applies the backup minimum without any pack config (defaults to 7 days)", async () => {
    expect(await analyze(patched(good.rds, "backupRetentionPeriod", 3))).toEqual([
      { policy: "postgres-backed-up", message: expect.stringMatching(/3 day\(s\).*>= 7/) },
    ]);
  });

  it("runs the stack rule over all resources", async () => {
    const resource = (r: { type: string; name: string; inputs: Record<string, unknown> }) =>
      new analyzerPb.AnalyzerResource()
        .setType(r.type)
        .setName(r.name)
        .setUrn(`urn:pulumi:test::llm-proxy::${r.type}::${r.name}`)
        .setProperties(Struct.fromJavaScript(r.inputs as Record<string, never>))
        .setOptions(options(false));
    const stack = (rs: (typeof good)[keyof typeof good][]) =>
      call<analyzerPb.AnalyzeStackRequest, analyzerPb.AnalyzeResponse>(
        client.analyzeStack,
        new analyzerPb.AnalyzeStackRequest().setResourcesList(rs.map(resource)),
      ).then((res) => res.getDiagnosticsList().map((d) => d.getPolicyname()));
    expect(await stack([good.deployment, good.hpa, good.pdb])).toEqual([]);
    expect(await stack([good.deployment, good.hpa])).toEqual(["pdb-for-multi-replica"]);
  });

  it("logged nothing to stderr", () => {
    expect(stderr).toBe("");
  });
});
