/**
 * Load-balanced deployments: one client model name served by several upstreams (`targets`), spread by weight,
 * a failed target moved behind the healthy ones for its cooldown, then the model's fallbacks.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../../service/config";
import { poolOrder } from "../../../service/providers/registry";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, type TestProxy } from "../../helpers/proxy";

const ENV = { DATABASE_URL: "postgres://u@127.0.0.1:1/db", PROXY_MASTER_KEY: "k".repeat(40) };

function configProblems(yaml: string): string {
  try {
    loadConfig({ env: ENV, fileText: yaml });
    return "";
  } catch (error) {
    return (error as Error).message;
  }
}

const PROVIDERS = `providers:
  a: { type: openai, base_url: "http://127.0.0.1:1/v1" }
  b: { type: openai, base_url: "http://127.0.0.1:2/v1" }
  claude: { type: anthropic, base_url: "http://127.0.0.1:3/v1" }
`;

describe("load-balanced deployments: configuration", () => {
  it("accepts targets with weights and turns them into a pool", () => {
    const config = loadConfig({
      env: ENV,
      fileText: `${PROVIDERS}models:
  - name: big
    targets: [{ provider: a, model: big-east, weight: 3 }, { provider: b }]
    cooldown_seconds: 2
`,
    });
    const big = config.models[0];
    expect(big).toMatchObject({ name: "big", provider: "a", model: "big-east" });
    expect(big.pool).toEqual({
      targets: [
        { provider: "a", model: "big-east", weight: 3 },
        { provider: "b", model: "big", weight: 1 },
      ],
      cooldownMs: 2000,
    });
  });

  it("the README's config example loads, its load-balanced model included", () => {
    const readme = fs.readFileSync(path.resolve(__dirname, "../../../README.md"), "utf8");
    const section = readme.slice(readme.indexOf("### Config file (`CONFIG_FILE`"));
    const yaml = section.slice(
      section.indexOf("```yaml\n") + 8,
      section.indexOf("```", section.indexOf("```yaml\n") + 8),
    );
    const config = loadConfig({
      env: { ...ENV, OPENAI_API_KEY: "a", AZURE_OPENAI_API_KEY: "b", ANTHROPIC_API_KEY: "c" },
      fileText: yaml,
    });
    expect(config.models.find((m) => m.name === "gpt-4o")?.pool?.targets.map((t) => t.provider)).toEqual([
      "azure",
      "openai",
    ]);
  });

  it("names each bad setting", () => {
    expect(
      configProblems(`${PROVIDERS}models:\n  - { name: x, provider: a, targets: [{ provider: b }] }\n`),
    ).toContain(
      "config models[0]: give either provider (and model) for one upstream or targets for several, not both",
    );
    expect(configProblems(`${PROVIDERS}models:\n  - { name: x }\n`)).toContain(
      "config models[0].provider: required",
    );
    expect(
      configProblems(
        `${PROVIDERS}models:\n  - { name: x, targets: [{ provider: a }, { provider: nope }] }\n`,
      ),
    ).toContain('config models[0].targets[1].provider: unknown provider "nope"');
    expect(
      configProblems(
        `${PROVIDERS}models:\n  - { name: e, kind: embedding, targets: [{ provider: a }, { provider: claude }] }\n`,
      ),
    ).toContain('config models[0].targets[1].provider: "claude" is an anthropic provider');
    expect(
      configProblems(`${PROVIDERS}models:\n  - { name: x, provider: a, cooldown_seconds: 5 }\n`),
    ).toContain("config models[0].cooldown_seconds: only applies to targets");
    expect(
      configProblems(
        `${PROVIDERS}models:\n  - { name: x, targets: [{ provider: a, weight: 0 }, { provider: b }] }\n`,
      ),
    ).toContain("models[0].targets[0].weight");
  });
});

describe("load-balanced deployments: order of the targets", () => {
  const member = (provider: string) => ({
    name: "m",
    provider,
    model: "m",
    fallbacks: [],
    maxInputTokens: null,
    kind: "chat" as const,
    pricing: null,
  });

  it("picks the first target in proportion to the weights", () => {
    const pool = {
      members: [member("a"), member("b"), member("c")],
      weights: [6, 3, 1],
      downUntil: [0, 0, 0],
      cooldownMs: 1,
    };
    const first = { a: 0, b: 0, c: 0 } as Record<string, number>;
    for (let i = 0; i < 20_000; i++) first[poolOrder(pool, 0)[0].provider] += 1;
    expect(first.a / 20_000).toBeCloseTo(0.6, 1);
    expect(first.b / 20_000).toBeCloseTo(0.3, 1);
    expect(first.c / 20_000).toBeCloseTo(0.1, 1);
    // Every order holds every target once.
    expect(
      poolOrder(pool, 0)
        .map((d) => d.provider)
        .sort(),
    ).toEqual(["a", "b", "c"]);
  });

  it("puts targets cooling down after the healthy ones, soonest back first", () => {
    const pool = {
      members: [member("a"), member("b"), member("c"), member("d")],
      weights: [100, 100, 1, 1],
      downUntil: [5_000, 2_000, 0, 0],
      cooldownMs: 1,
    };
    for (let i = 0; i < 50; i++) {
      const order = poolOrder(pool, 1_000).map((d) => d.provider);
      expect(order.slice(0, 2).sort()).toEqual(["c", "d"]);
      expect(order.slice(2)).toEqual(["b", "a"]);
    }
    // Once the cooldown is over a target is back in the draw.
    expect(poolOrder(pool, 6_000).length).toBe(4);
  });
});

describe("load-balanced deployments through the proxy", () => {
  let east: FakeUpstream;
  let west: FakeUpstream;
  let spare: FakeUpstream;
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    east = await startFakeUpstream({ name: "east" });
    west = await startFakeUpstream({ name: "west" });
    spare = await startFakeUpstream({ name: "spare" });
    proxy = await startProxy({
      configYaml: `providers:
  east: { type: openai, base_url: "${east.baseUrl}", timeout_ms: 2000, max_retries: 2 }
  west: { type: openai, base_url: "${west.baseUrl}", timeout_ms: 2000, max_retries: 2 }
  spare: { type: openai, base_url: "${spare.baseUrl}", timeout_ms: 2000, max_retries: 0 }
models:
  - name: big
    targets: [{ provider: east, model: big-east, weight: 3 }, { provider: west, model: big-west, weight: 1 }]
    cooldown_seconds: 1
    fallbacks: [small]
  - { name: small, provider: spare, model: small-model }
`,
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all([east?.close(), west?.close(), spare?.close()]);
  });
  beforeEach(() => {
    for (const u of [east, west, spare]) {
      u.behave({ kind: "ok" });
      u.requests.length = 0;
    }
  });

  const ask = async (content = "hi") => {
    const res = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "big", messages: [{ role: "user", content }] }),
    });
    return {
      status: res.status,
      body: (await res.json()) as { choices: Array<{ message: { content: string } }> },
    };
  };

  it("spreads requests by weight, one upstream call each, and records which provider served", async () => {
    const rowsBefore = (await proxy.usageRows()).length;
    for (let i = 0; i < 200; i++) expect((await ask(`n${i}`)).status).toBe(200);
    expect(east.requests.length + west.requests.length).toBe(200);
    // Binomial(200, 0.75): mean 150, sd 6.1; this is ±4 sd.
    expect(east.requests.length).toBeGreaterThanOrEqual(125);
    expect(east.requests.length).toBeLessThanOrEqual(175);
    expect(east.requests.every((r) => r.body.model === "big-east")).toBe(true);
    expect(west.requests.every((r) => r.body.model === "big-west")).toBe(true);
    const rows = (await proxy.waitForUsageRows(rowsBefore + 200)).slice(rowsBefore);
    expect(rows.filter((r) => r.provider === "east")).toHaveLength(east.requests.length);
    expect(rows.every((r) => r.served_model === "big" && r.requested_model === "big")).toBe(true);
  });

  it("a failing target is not retried: the other serves, and the failed one rests for its cooldown", async () => {
    east.behave({ kind: "status", status: 500 });
    // Until east is drawn first and fails, every answer comes from west or east.
    let served = "";
    for (let i = 0; i < 50 && !east.requests.length; i++) {
      const res = await ask("x");
      expect(res.status).toBe(200);
      served = res.body.choices[0].message.content;
    }
    expect(east.requests).toHaveLength(1); // max_retries 2, yet one attempt: the next target is the retry
    expect(served).toBe("Echo: x");
    east.behave({ kind: "ok" });
    // Cooling down: west first for every request, although east weighs three times more.
    const eastBefore = east.requests.length;
    for (let i = 0; i < 20; i++) expect((await ask("y")).status).toBe(200);
    expect(east.requests.length).toBe(eastBefore);
    // After the cooldown east is back in the draw.
    await new Promise((r) => setTimeout(r, 1_100));
    for (let i = 0; i < 30; i++) await ask("z");
    expect(east.requests.length).toBeGreaterThan(eastBefore);
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    expect(metrics).toMatch(/llmproxy_upstream_cooldowns_total\{model="big",provider="east"\} [1-9]/);
  });

  it("a 429's Retry-After longer than the cooldown sets how long the target rests", async () => {
    west.behave({ kind: "status", status: 429, headers: { "retry-after": "3" } });
    for (let i = 0; i < 200 && !west.requests.length; i++) expect((await ask()).status).toBe(200);
    expect(west.requests).toHaveLength(1);
    west.behave({ kind: "ok" });
    await new Promise((r) => setTimeout(r, 1_300)); // past the 1 s cooldown, inside the 3 s Retry-After
    const westBefore = west.requests.length;
    for (let i = 0; i < 20; i++) expect((await ask()).status).toBe(200);
    expect(west.requests.length).toBe(westBefore);
  });

  it("when every target fails, the pool's last target is retried as a single upstream would be, then the fallbacks answer", async () => {
    east.behave({ kind: "status", status: 503 });
    west.behave({ kind: "status", status: 502 });
    const res = await ask("both down");
    expect(res.status).toBe(200);
    // One attempt on the first target, 1 + max_retries (2) on the last.
    expect([east.requests.length, west.requests.length].sort()).toEqual([1, 3]);
    expect(spare.requests.at(-1)!.body.model).toBe("small-model");
  });

  it("a target whose credentials are refused is skipped and rests; the client never sees its 401", async () => {
    east.behave({
      kind: "status",
      status: 401,
      body: { error: { message: "bad key", type: "invalid_request_error" } },
    });
    for (let i = 0; i < 20; i++) expect((await ask("cred")).status).toBe(200);
    // Tried once, then resting behind west for the cooldown.
    expect(east.requests).toHaveLength(1);
    expect(west.requests.length).toBe(20);
  });

  it("a target that dies mid-stream rests too (the stream itself ends with an error event, no fallback)", async () => {
    await new Promise((r) => setTimeout(r, 1_100)); // earlier tests' cooldowns are over
    east.behave({ kind: "stream-cut", okChunks: 1 });
    for (let i = 0; i < 50 && !east.requests.length; i++) {
      const res = await fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "big",
          stream: true,
          messages: [{ role: "user", content: "a b c d" }],
        }),
      });
      await res.text();
    }
    expect(east.requests).toHaveLength(1);
    east.behave({ kind: "ok" });
    for (let i = 0; i < 10; i++) expect((await ask("after")).status).toBe(200);
    expect(east.requests).toHaveLength(1);
  });

  it("targets that fail briefly: the last one's retry succeeds, no fallback needed", async () => {
    // Each target fails its first attempt only.
    east.behave((_req, n) =>
      n === 0 ? { kind: "status", status: 429, headers: { "retry-after": "0" } } : { kind: "ok" },
    );
    west.behave((_req, n) =>
      n === 0 ? { kind: "status", status: 429, headers: { "retry-after": "0" } } : { kind: "ok" },
    );
    const res = await ask("brief");
    expect(res.status).toBe(200);
    expect(spare.requests).toHaveLength(0);
  });
});
