/**
 * Config problems a user meets at start: each names the key and the fix, never a secret's value, and a setting that
 * loads does what it says (secrets with a trailing newline, an empty config file, credentials in a URL, a query
 * secret echoed by an upstream, typos, limits the code does not honour, `--embedded`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  configWarnings,
  embeddedEnv,
  loadConfig,
  type LoadConfigOptions,
} from "../../../service/config";
import { freePort } from "../../helpers/postgres";
import { startUpstreamProxy } from "../../helpers/proxy";

const MASTER = "MASTERKEYSECRETaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const PROD = { DATABASE_URL: "postgres://postgres@127.0.0.1:5432/x", PROXY_MASTER_KEY: MASTER };

/** The problems loadConfig lists ([] when it loads). */
function problemsOf(opts: LoadConfigOptions): string[] {
  try {
    loadConfig(opts);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems;
  }
}

const providerFile = (extra = "") =>
  [
    "providers:",
    `  o: { type: openai, base_url: "https://x.example/v1", api_key_env: SECRET_API_KEY${extra} }`,
    "models:",
    "  - { name: m, provider: o }",
  ].join("\n");

describe("secrets from the environment: a trailing newline is removed, one inside is a problem", () => {
  it("PROXY_MASTER_KEY with a trailing newline (kubectl create secret --from-file) is the key without it", () => {
    for (const tail of ["\n", "\r\n", "  \n", "\n\n"]) {
      const config = loadConfig({ env: { ...PROD, PROXY_MASTER_KEY: MASTER + tail } });
      expect(config.masterKey, JSON.stringify(tail)).toBe(MASTER);
    }
  });

  it("PROXY_MASTER_KEY with a line break or control character inside is a problem naming it, without the value", () => {
    const broken = problemsOf({ env: { ...PROD, PROXY_MASTER_KEY: `${MASTER}\nSECONDLINEsecret` } });
    expect(broken).toEqual([expect.stringMatching(/^env PROXY_MASTER_KEY: contains a line break/)]);
    const control = problemsOf({ env: { ...PROD, PROXY_MASTER_KEY: `${MASTER}\u0007tail` } });
    expect(control).toEqual([expect.stringMatching(/^env PROXY_MASTER_KEY: contains a control character/)]);
    expect([...broken, ...control].join("\n")).not.toMatch(/MASTERKEYSECRET|SECONDLINE/);
  });

  it("a provider key read from env: trailing newline removed; a line break inside names the variable and the provider", () => {
    const config = loadConfig({
      env: { ...PROD, SECRET_API_KEY: "PROVKEYSECRET\n" },
      fileText: providerFile(),
    });
    expect(config.providers.o).toMatchObject({ apiKey: "PROVKEYSECRET" });
    const problems = problemsOf({
      env: { ...PROD, SECRET_API_KEY: "PROVKEYSECRET\nline2" },
      fileText: providerFile(),
    });
    expect(problems).toEqual([
      expect.stringMatching(/^env SECRET_API_KEY \(providers\.o\.api_key_env\): contains a line break/),
    ]);
    expect(problems.join("\n")).not.toContain("PROVKEYSECRET");
  });

  it("the zero-config OPENAI_API_KEY: trailing newline removed, a line break inside is a problem", () => {
    const config = loadConfig({ env: { ...PROD, OPENAI_API_KEY: "OPENAIKEYSECRET\r\n" } });
    expect(config.providers.openai).toMatchObject({ apiKey: "OPENAIKEYSECRET" });
    const problems = problemsOf({ env: { ...PROD, OPENAI_API_KEY: "OPENAIKEYSECRET\nx" } });
    expect(problems).toEqual([expect.stringMatching(/^env OPENAI_API_KEY: contains a line break/)]);
    expect(problems.join("\n")).not.toContain("OPENAIKEYSECRET");
  });

  it("a provider key ending in a newline reaches the upstream without it (was a 502 upstream_unreachable)", async () => {
    const { upstream, proxy, key, close } = await startUpstreamProxy(
      (baseUrl) =>
        [
          "providers:",
          `  up: { type: openai, base_url: "${baseUrl}", api_key_env: TEST_PROVIDER_KEY, max_retries: 0 }`,
          "models:",
          "  - { name: m, provider: up }",
        ].join("\n"),
      { TEST_PROVIDER_KEY: "pk-live-newline-0123456789\n" },
    );
    try {
      const res = await fetch(`${proxy.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      expect(upstream.requests.at(-1)?.headers.authorization).toBe("Bearer pk-live-newline-0123456789");
    } finally {
      await close();
    }
  });
});

describe("an empty config file", () => {
  for (const [what, text] of [
    ["empty", ""],
    ["only a comment", "# nothing yet\n"],
    ["{}", "{}\n"],
    ["~", "~\n"],
  ]) {
    it(`${what}: a problem naming the file and the fix, instead of a proxy serving no models`, () => {
      const problems = problemsOf({
        env: { ...PROD, CONFIG_FILE: "/etc/llm-proxy/config.yaml", OPENAI_API_KEY: "OPENAIKEYSECRET" },
        fileText: text,
      });
      expect(problems).toEqual([
        expect.stringMatching(
          /^config file \/etc\/llm-proxy\/config\.yaml: no models configured \(is it empty\?\); add models: .*remove CONFIG_FILE/,
        ),
      ]);
      expect(problems[0]).toContain("OPENAI_API_KEY is set");
      expect(problems[0]).not.toContain("OPENAIKEYSECRET");
    });
  }

  it("a file that sets other sections but no models loads, with a warning at start", () => {
    const env = { ...PROD, CONFIG_FILE: "/etc/llm-proxy/config.yaml" };
    const config = loadConfig({ env, fileText: "pii: { enabled: false }\n" });
    expect(config.models).toEqual([]);
    expect(configWarnings(env, config)).toEqual([expect.stringContaining("no models configured")]);
  });
});

describe("credentials in a provider URL", () => {
  it("base_url with user:password@ is a problem naming the key, never the credentials", () => {
    const problems = problemsOf({
      env: PROD,
      fileText: [
        "providers:",
        '  p: { type: openai, base_url: "http://URLUSER:URLSECRET@127.0.0.1:27440/v1" }',
        '  a: { type: anthropic, base_url: "https://tok:URLSECRET2@api.example/v1" }',
        "models:",
        "  - { name: m, provider: p }",
      ].join("\n"),
    });
    expect(problems).toEqual([
      expect.stringMatching(/^config providers\.p\.base_url: contains credentials .* api_key_env/),
      expect.stringMatching(/^config providers\.a\.base_url: contains credentials/),
    ]);
    expect(problems.join("\n")).not.toMatch(/URLSECRET|URLUSER|tok:/);
  });

  it("OPENAI_BASE_URL with credentials is a problem naming it", () => {
    const problems = problemsOf({
      env: { ...PROD, OPENAI_API_KEY: "k", OPENAI_BASE_URL: "https://u:URLSECRET@api.example/v1" },
    });
    expect(problems).toEqual([expect.stringMatching(/^env OPENAI_BASE_URL: contains credentials/)]);
    expect(problems.join("\n")).not.toContain("URLSECRET");
  });
});

describe("a secret in a provider's query", () => {
  it("an upstream error quoting the URL reaches the client with the query secret redacted (short values kept)", async () => {
    const secret = "qs+ecret/0123456789==";
    const { upstream, proxy, key, close } = await startUpstreamProxy((baseUrl) =>
      [
        "providers:",
        `  up: { type: openai, base_url: "${baseUrl}", max_retries: 0, query: { key: "${secret}", api-version: "2024-10-21" } }`,
        "models:",
        "  - { name: m, provider: up }",
      ].join("\n"),
    );
    try {
      upstream.behave((req) => ({
        kind: "status",
        status: 400,
        body: {
          error: { message: `bad request to ${req.path} (raw: ${secret})`, type: "invalid_request_error" },
        },
      }));
      const res = await fetch(`${proxy.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      });
      const text = await res.text();
      expect(res.status).toBe(400);
      expect(upstream.requests.at(-1)?.path).toContain(encodeURIComponent(secret));
      expect(text).not.toContain(secret);
      expect(text).not.toContain(encodeURIComponent(secret));
      const message: string = JSON.parse(text).error.message;
      expect(message).toContain("key=[REDACTED]");
      expect(message).toContain("(raw: [REDACTED])");
      // Shorter than the redaction minimum (12 characters): not a secret, kept.
      expect(message).toContain("api-version=2024-10-21");
      expect(JSON.stringify(await proxy.usageRows())).not.toContain(secret);
    } finally {
      await close();
    }
  });
});

describe("problems that name the key give the fix", () => {
  it("an unknown key near a known one: did you mean; far from any: the keys allowed there", () => {
    expect(problemsOf({ env: PROD, fileText: "modles:\n  - { name: m, provider: mock }\n" })).toEqual([
      "config modles: unknown key; did you mean models?",
    ]);
    expect(
      problemsOf({
        env: PROD,
        fileText: 'providers:\n  o: { type: openai, base_url: "https://x.example/v1", max_retires: 3 }\n',
      }),
    ).toEqual(["config providers.o.max_retires: unknown key; did you mean max_retries?"]);
    const far = problemsOf({ env: PROD, fileText: "frobnicate: 1\n" });
    expect(far).toEqual([
      expect.stringMatching(/^config frobnicate: unknown key; allowed here: providers, models, /),
    ]);
    expect(far[0]).toContain("content_policy");
  });

  it("api_key in the file: use api_key_env, and the key is not quoted", () => {
    const problems = problemsOf({
      env: PROD,
      fileText:
        'providers:\n  o: { type: openai, base_url: "https://x.example/v1", api_key: CFGSECRETKEY }\n',
    });
    expect(problems).toEqual([
      expect.stringMatching(
        /^config providers\.o\.api_key: unknown key; use api_key_env \(the name of an environment variable holding the key\)/,
      ),
    ]);
    expect(problems[0]).not.toContain("CFGSECRETKEY");
  });

  it("a provider name that breaks the rule states the rule", () => {
    expect(
      problemsOf({
        env: PROD,
        fileText: "providers:\n  OpenAI: { type: mock }\nmodels: [{ name: m, provider: OpenAI }]\n",
      }),
    ).toEqual([
      expect.stringMatching(
        /^config providers\.OpenAI: .*lower-case letters a-z, digits, - and _, starting with a letter or digit/,
      ),
    ]);
  });

  it("an unknown PII entity lists the valid ones (or the close one)", () => {
    const problems = problemsOf({
      env: PROD,
      fileText: "pii: { entities: { EMAIL: false, CREDIT_CARDS: false } }\n",
    });
    expect(problems).toEqual([
      expect.stringMatching(
        /^config pii\.entities\.EMAIL: unknown key; allowed here: EMAIL_ADDRESS, .*IP_ADDRESS/,
      ),
      "config pii.entities.CREDIT_CARDS: unknown key; did you mean CREDIT_CARD?",
    ]);
  });

  it("a blocked pattern that does not compile: its index and the engine's reason, never the pattern", () => {
    const problems = problemsOf({
      env: PROD,
      fileText: `content_policy:\n  blocked_patterns: ["ok", "/(CFGSECRET[/"]\n`,
    });
    expect(problems).toEqual([
      expect.stringMatching(
        /^config content_policy\.blocked_patterns\[1\]: invalid regex \(Unterminated character class\)/,
      ),
    ]);
    expect(problems[0]).not.toContain("CFGSECRET");
  });

  it("zod paths use the bracket style of the other problems", () => {
    expect(
      problemsOf({
        env: PROD,
        fileText:
          "providers: { mock: { type: mock } }\nmodels:\n  - { name: m, provider: mock, max_input_tokens: -1 }\n",
      }),
    ).toEqual([expect.stringMatching(/^config models\[0\]\.max_input_tokens: /)]);
  });
});

describe("every problem listed: checks across sections run though the schema failed", () => {
  it("schema problems and the cross-checks of the parts that parse, at once", () => {
    const problems = problemsOf({
      env: PROD,
      fileText: [
        "providers:",
        "  mock: { type: mock }",
        "  bad: { type: mock, latency_ms: -1 }",
        "models:",
        "  - { name: m1, provider: mock, kind: embedding }",
        "  - { name: c1, provider: mock, fallbacks: [nope] }",
        "  - { name: broken, provider: mock, max_input_tokens: 0 }",
        "  - { name: c2, provider: nowhere, fallbacks: [broken] }",
        "  - { name: c3, provider: bad }",
        "embedding_model: c1",
        "cache: { ttl_seconds: 0 }",
        "rag: { chunk_tokens: 64, chunk_overlap: 64 }",
      ].join("\n"),
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        "config providers.bad.latency_ms: Too small: expected number to be >=0",
        expect.stringMatching(/^config models\[2\]\.max_input_tokens: /),
        expect.stringMatching(/^config cache\.ttl_seconds: /),
        'config models[1].fallbacks[0]: unknown model "nope"',
        expect.stringMatching(/^config models\[3\]\.provider: unknown provider "nowhere"/),
        'config embedding_model: "c1" is not an embedding model (set kind: embedding on it)',
        "config rag.chunk_overlap: must be smaller than rag.chunk_tokens",
      ]),
    );
    // A model or provider that failed the schema is not also "unknown" where it is named.
    expect(problems.join("\n")).not.toMatch(/unknown model "broken"|unknown provider "bad"/);
    expect(problems).toHaveLength(7);
  });

  it("environment problems and the checks across variables, at once", () => {
    expect(
      problemsOf({ env: { DATABASE_URL: PROD.DATABASE_URL, PORT: "http", REDIS_CLUSTER: "true" } }),
    ).toEqual([
      expect.stringMatching(/^env PORT: /),
      expect.stringMatching(/^env PROXY_MASTER_KEY: required when DATABASE_URL is set/),
      "env REDIS_CLUSTER: needs REDIS_URL (a seed node of the cluster)",
    ]);
  });
});

describe("limits the code honours", () => {
  const pool = (cooldown: number) =>
    `providers: { a: { type: mock }, b: { type: mock } }\nmodels:\n  - { name: m, targets: [{ provider: a }, { provider: b }], cooldown_seconds: ${cooldown} }\n`;

  it("cooldown_seconds: at most 300, the registry's cap", () => {
    expect(loadConfig({ env: PROD, fileText: pool(300) }).models[0].pool?.cooldownMs).toBe(300_000);
    expect(problemsOf({ env: PROD, fileText: pool(301) })).toEqual([
      expect.stringMatching(/^config models\[0\]\.cooldown_seconds: at most 300/),
    ]);
  });

  it("mock latency_ms: at most 600000 (a longer Node timer fires after 1 ms)", () => {
    const mock = (ms: string) =>
      `providers: { m: { type: mock, latency_ms: ${ms} } }\nmodels: [{ name: x, provider: m }]\n`;
    expect(loadConfig({ env: PROD, fileText: mock("600000") }).providers.m).toMatchObject({
      latencyMs: 600_000,
    });
    expect(problemsOf({ env: PROD, fileText: mock("1e10") })).toEqual([
      "config providers.m.latency_ms: at most 600000 (10 minutes)",
    ]);
  });
});

describe("--embedded", () => {
  it("drops the database and Redis settings and names what it dropped", () => {
    const { env, ignored } = embeddedEnv({
      DATABASE_URL: "postgres://u:DBPASSSECRET@db:5432/x",
      REDIS_URL: "redis://r:6379",
      REDIS_CLUSTER: "",
      PORT: "8000",
    });
    expect(ignored).toEqual(["DATABASE_URL", "REDIS_URL"]);
    expect(env).toEqual({ PORT: "8000" });
    expect(loadConfig({ env }).embedded).toBe(true);
  });

  it("a WORKERS other than 1 in embedded mode is a warning (it runs one worker)", () => {
    const config = loadConfig({ env: { WORKERS: "4" } });
    expect(config.server.workers).toBe(1);
    expect(configWarnings({ WORKERS: "4" }, config)).toEqual([
      expect.stringMatching(/^env WORKERS=4 is ignored: the embedded default runs one worker/),
    ]);
    expect(configWarnings({ WORKERS: "1" }, config)).toEqual([]);
    expect(configWarnings({ ...PROD, WORKERS: "4" }, loadConfig({ env: { ...PROD, WORKERS: "4" } }))).toEqual(
      [],
    );
  });

  const running: ChildProcess[] = [];
  const dirs: string[] = [];
  afterAll(() => {
    for (const p of running) p.kill("SIGKILL");
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it("`node dist/service/main.js --embedded` with DATABASE_URL, REDIS_URL and WORKERS exported starts embedded, saying so", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-embedded-flag-"));
    dirs.push(dir);
    const port = await freePort();
    const proc = spawn(
      process.execPath,
      [path.resolve(__dirname, "../../../dist/service/main.js"), "--embedded"],
      {
        cwd: dir,
        env: {
          PATH: process.env.PATH ?? "",
          HOME: process.env.HOME ?? dir,
          PORT: String(port),
          DATA_DIR: path.join(dir, "data"),
          DATABASE_URL: "postgres://nobody:DBPASSSECRET@127.0.0.1:1/none",
          REDIS_URL: "redis://127.0.0.1:1",
          WORKERS: "3",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    running.push(proc);
    let out = "";
    proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`exited with ${proc.exitCode}:\n${out}`);
      try {
        if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`not ready in time:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(out).toContain("llm-proxy: --embedded: ignoring DATABASE_URL, REDIS_URL from the environment");
    expect(out).toContain("llm-proxy: warning: env WORKERS=3 is ignored");
    expect(out).not.toContain("DBPASSSECRET");
    proc.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
