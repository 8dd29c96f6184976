/**
 * Config combinations that each key alone accepts but the stack cannot run with: refused before any resource (one
 * problem per mistake, naming the keys and the fix), or, for keys that are merely ignored, a Pulumi warning.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { describeOverrides } from "../../scripts/plan";
import { parseConfigValues, parseStackConfig, ignoredKeyWarnings, type RawConfig } from "../../stacks/config";
import { configProblems, run } from "./helpers";

const AWS: RawConfig = { cloud: "aws", apiAllowedCidrs: '["203.0.113.0/24"]' };
const aws = { region: "eu-west-1" };
const AZURE: RawConfig = { cloud: "azure", apiAllowedCidrs: '["203.0.113.0/24"]' };
const azure = { region: "westeurope" };
const GCP: RawConfig = { cloud: "gcp", apiAllowedCidrs: '["203.0.113.0/24"]' };
const gcp = { region: "europe-west1", gcpProject: "acme-llm-proxy-prod" };
const kubeconfig = { existingKubeconfig: {} as never };

/** The problems for `raw` with an existing cluster (its secret set). */
function problemsWithCluster(raw: RawConfig, provider: { region?: string; gcpProject?: string }): string[] {
  try {
    parseStackConfig(raw, provider, kubeconfig);
  } catch (error) {
    return (error as { problems: string[] }).problems;
  }
  throw new Error("expected the config to be rejected");
}

describe("an existing cluster needs its own network for the databases", () => {
  it.each([
    ["aws", AWS, aws, "the cluster's VPC id"],
    ["azure", AZURE, azure, "the cluster's VNet resource id"],
    ["gcp", GCP, gcp, "the cluster's network self link"],
  ] as const)("%s: existingKubeconfig without existingNetworkId is refused", (_, raw, provider, kind) => {
    expect(problemsWithCluster(raw, provider)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^llm-proxy:existingKubeconfig is set but llm-proxy:existingNetworkId is empty: .*The databases must live in the cluster's network: set llm-proxy:existingNetworkId to ${kind}`,
        ),
      ),
    ]);
  });

  it("with the cluster's network it is accepted", () => {
    const cfg = parseStackConfig(
      { ...AWS, existingNetworkId: "vpc-1", existingSubnetIds: '["s-1","s-2"]' },
      aws,
      kubeconfig,
    );
    expect(cfg.network.existing?.networkId).toBe("vpc-1");
  });
});

describe("zones belong to the stack's region", () => {
  it("AWS zones are <aws:region><letter>", () => {
    expect(configProblems({ ...AWS, zones: '["us-east-1a","us-east-1b","eu-west-1c"]' }, aws)).toEqual([
      `llm-proxy:zones lists "us-east-1a", "us-east-1b", not a zone of aws:region eu-west-1 (AWS zones are <region><letter>, e.g. eu-west-1a). List zones of eu-west-1 with: pulumi config set --path 'llm-proxy:zones[0]' eu-west-1a, or change aws:region.`,
    ]);
    expect(parseStackConfig({ ...AWS, zones: '["eu-west-1a","eu-west-1b"]' }, aws).zones).toEqual([
      "eu-west-1a",
      "eu-west-1b",
    ]);
  });

  it("GCP zones are <gcp:region>-<letter>", () => {
    expect(configProblems({ ...GCP, zones: '["us-central1-a","europe-west1-b"]' }, gcp)).toEqual([
      expect.stringMatching(
        /^llm-proxy:zones lists "us-central1-a", not a zone of gcp:region europe-west1 .*or change gcp:region\.$/,
      ),
    ]);
    expect(configProblems({ ...GCP, zones: '["europe-west1-b","europe-west1-b2"]' }, gcp)[0]).toMatch(
      /"europe-west1-b2", not a zone of gcp:region/,
    );
    expect(
      parseStackConfig({ ...GCP, zones: '["europe-west1-b","europe-west1-c"]' }, gcp).zones,
    ).toHaveLength(2);
  });

  it("Azure zones are 1, 2, 3", () => {
    expect(configProblems({ ...AZURE, zones: '["westeurope-1","2"]' }, azure)[0]).toMatch(
      /^llm-proxy:zones lists "westeurope-1": Azure zones are 1, 2, 3/,
    );
  });
});

describe("networkCidr the cloud accepts", () => {
  it("host bits set: refused with the canonical form", () => {
    expect(configProblems({ ...AWS, networkCidr: "10.41.1.0/16" }, aws)).toEqual([
      'llm-proxy:networkCidr "10.41.1.0/16" has host bits set; the clouds take only the network address. Set it with: pulumi config set llm-proxy:networkCidr 10.41.0.0/16.',
    ]);
  });

  it("AWS: the created VPC is exactly a /16 (larger is no VPC, smaller does not fit the subnet plan)", () => {
    expect(configProblems({ ...AWS, networkCidr: "10.0.0.0/8" }, aws)).toEqual([
      expect.stringMatching(
        /^llm-proxy:networkCidr "10\.0\.0\.0\/8" is larger than a \/16: an AWS VPC takes \/16 to \/28.*Use exactly a \/16/,
      ),
    ]);
    expect(configProblems({ ...AWS, networkCidr: "10.40.0.0/20" }, aws)[0]).toMatch(
      /must be a \/16 or larger/,
    );
    expect(parseStackConfig({ ...AWS, networkCidr: "10.50.0.0/16" }, aws).network.cidr).toBe("10.50.0.0/16");
  });

  it("Azure: not over the AKS service and pod ranges", () => {
    expect(configProblems({ ...AZURE, networkCidr: "172.16.0.0/12" }, azure)).toEqual([
      expect.stringMatching(
        /^llm-proxy:networkCidr 172\.16\.0\.0\/12 overlaps 172\.16\.0\.0\/16, the AKS service range/,
      ),
    ]);
    expect(configProblems({ ...AZURE, networkCidr: "192.168.0.0/16" }, azure)).toEqual([
      expect.stringMatching(/overlaps 192\.168\.0\.0\/16, the AKS pod range/),
    ]);
    // An existing cluster keeps its own ranges.
    expect(
      parseStackConfig(
        {
          ...AZURE,
          networkCidr: "192.168.0.0/16",
          existingNetworkId: "/subscriptions/x/vnet",
          existingSubnetIds: '["a","b","c"]',
        },
        azure,
        kubeconfig,
      ).network.cidr,
    ).toBe("192.168.0.0/16");
  });

  it("GCP: not over the GKE control-plane range", () => {
    expect(configProblems({ ...GCP, networkCidr: "172.16.0.0/16" }, gcp)).toEqual([
      expect.stringMatching(
        /^llm-proxy:networkCidr 172\.16\.0\.0\/16 overlaps 172\.16\.0\.32\/28, the GKE control-plane range/,
      ),
    ]);
  });
});

describe("blank strings and GCP capacity limits", () => {
  it.each(["nodeSize", "postgresSize", "redisSize", "filesystemTier", "ingressClassName", "image"])(
    "%s of spaces is refused, naming the key",
    (k) => {
      expect(configProblems({ ...AWS, [k]: "  " }, aws)).toContainEqual(
        `llm-proxy:${k} is blank ("  "). Set it with: pulumi config set llm-proxy:${k} <value>, or remove it (back to the default) with: pulumi config rm llm-proxy:${k}.`,
      );
    },
  );

  it("Memorystore at most 300 GB, Cloud SQL 10-65536 GB, Filestore per-tier maximum", () => {
    expect(configProblems({ ...GCP, redisMemoryGb: "301" }, gcp)).toEqual([
      expect.stringMatching(/^llm-proxy:redisMemoryGb is 301, above the 300 GB .* 300\.$/),
    ]);
    expect(configProblems({ ...GCP, postgresStorageGb: "5" }, gcp)[0]).toMatch(
      /^llm-proxy:postgresStorageGb is 5, outside the 10-65536 GB .* 10\.$/,
    );
    expect(configProblems({ ...GCP, postgresStorageGb: "70000" }, gcp)[0]).toMatch(
      /outside the 10-65536 GB .* 65536\.$/,
    );
    expect(configProblems({ ...GCP, filesystemSizeGb: "200000" }, gcp)).toEqual([
      expect.stringMatching(
        /^llm-proxy:filesystemSizeGb is 200000, above the 102400 GiB maximum of Filestore REGIONAL/,
      ),
    ]);
    const max = parseStackConfig(
      { ...GCP, redisMemoryGb: "300", postgresStorageGb: "65536", filesystemSizeGb: "102400" },
      gcp,
    );
    expect([max.redis.memoryGb, max.postgres.storageGb, max.filesystem.sizeGb]).toEqual([300, 65536, 102400]);
  });
});

describe("keys set but ignored: a warning, not an error", () => {
  const values = (raw: RawConfig) => parseConfigValues(raw).values;

  it("computes one warning per ignored key that differs from its default", () => {
    expect(ignoredKeyWarnings(values({ ...AWS, replicas: "7" }), { hasExistingKubeconfig: false })).toEqual([
      "llm-proxy:replicas is set but ignored: llm-proxy:autoscalingEnabled is true, so the HPA sizes the proxy (llm-proxy:minReplicas to llm-proxy:maxReplicas). Remove it with: pulumi config rm llm-proxy:replicas.",
    ]);
    const off = ignoredKeyWarnings(
      values({
        ...AWS,
        autoscalingEnabled: "false",
        minReplicas: "4",
        maxReplicas: "20",
        cpuTargetPercent: "50",
        scaleDownStabilizationSeconds: "60",
      }),
      { hasExistingKubeconfig: false },
    );
    expect(off.map((w) => w.split(" ")[0])).toEqual([
      "llm-proxy:minReplicas",
      "llm-proxy:maxReplicas",
      "llm-proxy:cpuTargetPercent",
      "llm-proxy:scaleDownStabilizationSeconds",
    ]);
    expect(off[0]).toMatch(/autoscalingEnabled is false, so there is no HPA/);
    const existing = ignoredKeyWarnings(
      values({
        ...AWS,
        nodeSize: "m6i.2xlarge",
        nodeMinCount: "6",
        nodeMaxCount: "20",
        kubernetesVersion: "1.32",
      }),
      { hasExistingKubeconfig: true },
    );
    expect(existing.map((w) => w.split(" ")[0])).toEqual([
      "llm-proxy:nodeSize",
      "llm-proxy:nodeMinCount",
      "llm-proxy:nodeMaxCount",
      "llm-proxy:kubernetesVersion",
      "llm-proxy:apiAllowedCidrs",
    ]);
    expect(existing[0]).toMatch(/existingKubeconfig is set, so no cluster/);
    // The defaults (and the keys that are used) warn about nothing.
    expect(ignoredKeyWarnings(values(AWS), { hasExistingKubeconfig: false })).toEqual([]);
  });

  it("an existing network with the default networkCidr warns that the firewall rules admit that range", () => {
    const warned = ignoredKeyWarnings(values({ ...AWS, existingNetworkId: "vpc-1" }), {
      hasExistingKubeconfig: false,
    });
    expect(warned).toEqual([
      expect.stringMatching(
        /^llm-proxy:existingNetworkId is set but llm-proxy:networkCidr is the default 10\.40\.0\.0\/16/,
      ),
    ]);
    expect(
      ignoredKeyWarnings(values({ ...AWS, existingNetworkId: "vpc-1", networkCidr: "172.31.0.0/16" }), {
        hasExistingKubeconfig: false,
      }),
    ).toEqual([]);
  });

  afterEach(() => vi.restoreAllMocks());

  it("the program logs them as Pulumi warnings and still deploys", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    const r = await run({ stack: "aws", overrides: { replicas: "7" } });
    expect(r.resources.length).toBeGreaterThan(0);
    expect(warn.mock.calls.map((c) => String(c[0]))).toContainEqual(
      expect.stringMatching(/llm-proxy:replicas is set but ignored: llm-proxy:autoscalingEnabled is true/),
    );
  });
});

describe("plan masks secret keys passed with --config", () => {
  it("llm-proxy:anthropicApiKey=sk-... is printed as [secret], other keys as given", () => {
    expect(
      describeOverrides({
        "llm-proxy:anthropicApiKey": "sk-ant-PLAIN",
        openaiApiKey: "sk-PLAIN",
        "llm-proxy:existingKubeconfig": "apiVersion: v1",
        "llm-proxy:replicas": "5",
        "aws:region": "eu-west-2",
      }),
    ).toEqual([
      "llm-proxy:anthropicApiKey=[secret]",
      "openaiApiKey=[secret]",
      "llm-proxy:existingKubeconfig=[secret]",
      "llm-proxy:replicas=5",
      "aws:region=eu-west-2",
    ]);
  });
});

describe("ingress names and the namespace", () => {
  it.each([
    ["API.Example.com", "api.example.com"],
    ["https://api.example.com/v1", "api.example.com"],
    ["api.example.com:443", "api.example.com"],
  ])("ingressHost %s is refused with the DNS name to use", (host, fix) => {
    expect(configProblems({ ...AWS, ingressHost: host }, aws)).toEqual([
      `llm-proxy:ingressHost "${host}" is not a lower-case DNS name (no scheme, port or path). Set it with: pulumi config set llm-proxy:ingressHost ${fix}.`,
    ]);
  });

  it("a DNS name (or a wildcard) and a DNS-1123 TLS Secret name pass; others are refused", () => {
    const ok = parseStackConfig(
      { ...AWS, ingressHost: "*.llm.example.com", ingressTlsSecret: "llm-proxy-tls" },
      aws,
    );
    expect(ok.proxy.ingress?.host).toBe("*.llm.example.com");
    expect(
      configProblems({ ...AWS, ingressHost: "api.example.com", ingressTlsSecret: "Bad_Name" }, aws),
    ).toEqual([expect.stringMatching(/^llm-proxy:ingressTlsSecret "Bad_Name" is not a valid Secret name/)]);
  });

  it.each(["default", "kube-system", "kube-public", "kube-node-lease"])("namespace %s is refused", (ns) => {
    expect(configProblems({ ...AWS, namespace: ns }, aws)).toEqual([
      expect.stringMatching(new RegExp(`^llm-proxy:namespace is "${ns}", a namespace Kubernetes reserves`)),
    ]);
  });
});
