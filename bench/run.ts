/**
 * `npm run bench`: load benchmarks (not tests). Compares, alternating in one run so machine noise hits all alike:
 *   upstream      the fake upstream directly (0 ms answers)
 *   passthrough   a bare node:http → undici passthrough (the baseline every ratio is against)
 *   koa-forward   a reference, not a target: the smallest Koa app that parses the JSON body, forwards it and
 *                 parses the answer (no feature at all) — how much of the budget framework and parsing take
 *   proxy-core    llm-proxy, one worker: auth + routing + usage recording (PII, limits and cache off)
 *   proxy-limits  + Redis rate limits (every request admitted) and the Redis cache, all misses
 *   proxy-hit     the same, every request a cache hit
 *   proxy-content + the default content pipeline: PII (names and places), content policy, token count
 * and reports req/s, p50/p99 latency, CPU per request, peak RSS per worker; then time-to-first-byte added on a
 * paced stream, process start to ready, the limiter alone and the PII scrubber alone.
 *
 * Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (like the tests). Options (env):
 * BENCH_SECONDS (per measurement, default 5), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (default 32).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import autocannon from "autocannon";
import pg from "pg";
import { runLimiterBench, formatLimiterBench } from "./limiter";
import { runPiiBench, formatPiiBench } from "./pii";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const DIST = path.resolve(__dirname);
const MASTER_KEY = "bench-master-key-0123456789abcdef0123456789";
const TICK_MS = 1000 / Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim() || 100);

const CHAT_BODY = JSON.stringify({
  model: "bench",
  messages: [
    { role: "system", content: "You are a helpful assistant for the support team." },
    {
      role: "user",
      content:
        "Hi, my name is Sarah Connor and I moved from Dublin to Berlin last month. My order 4471 arrived damaged; " +
        "please reply to sarah.connor@example.com or call +1 415 555 0132. What are my options?",
    },
  ],
  max_tokens: 64,
});

interface Proc {
  name: string;
  proc: ChildProcess;
  url: string;
}

function startNode(
  name: string,
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Proc> {
  const proc = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    proc.once("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
    proc.stdout!.once("data", (d: Buffer) => {
      resolve({ name, proc, url: `http://127.0.0.1:${d.toString().trim()}` });
    });
  });
}

async function waitReady(url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function freePort(): Promise<number> {
  const net = await import("node:net");
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function startProxy(
  name: string,
  databaseUrl: string,
  configYaml: string,
  env: Record<string, string> = {},
) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `llmp-bench-${name}-`));
  fs.writeFileSync(path.join(dir, "config.yaml"), configYaml);
  const port = await freePort();
  const proc = spawn(process.execPath, [path.join(DIST, "../service/main.js")], {
    env: {
      PATH: process.env.PATH ?? "",
      PORT: String(port),
      HOST: "127.0.0.1",
      WORKERS: "1",
      DATABASE_URL: databaseUrl,
      PROXY_MASTER_KEY: MASTER_KEY,
      CONFIG_FILE: path.join(dir, "config.yaml"),
      DATA_DIR: dir,
      LOG_LEVEL: "info",
      ...env,
    },
    // Logs go nowhere, but are still produced (info level, one line per request) as in production.
    stdio: ["ignore", "ignore", "inherit"],
  });
  const started = process.hrtime.bigint();
  const url = `http://127.0.0.1:${port}`;
  await waitReady(url);
  const readyMs = Number(process.hrtime.bigint() - started) / 1e6;
  return { name, proc, url, dir, readyMs };
}

async function createKey(url: string): Promise<string> {
  const res = await fetch(`${url}/internal/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${MASTER_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "bench", scopes: ["*"] }),
  });
  if (res.status !== 200 && res.status !== 201)
    throw new Error(`key creation failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { key: string }).key;
}

/** The process and its children (the cluster workers). */
function processTree(pid: number): number[] {
  const out = [pid];
  try {
    const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    for (const c of children.split(/\s+/).filter(Boolean)) out.push(...processTree(Number(c)));
  } catch {
    // gone
  }
  return out;
}

function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return ticks * TICK_MS;
}

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

interface Measurement {
  rps: number;
  p50: number;
  p99: number;
  cpuPerReqMs: number;
  peakRssMiB: number;
  non2xx: number;
}

/**
 * Varied bodies are numbered across rounds and tagged with this run, so no varied request repeats an earlier one's
 * body: every one of them is a cache miss (before 2026-11-24 the numbering restarted each round, and from the second
 * round on most "misses" were hits of the first round's entries).
 */
const RUN_ID = `${process.pid}.${Date.now()}`;
let variant = 0;

async function load(
  url: string,
  headers: Record<string, string>,
  pid: number | null,
  varyBody: boolean,
): Promise<Measurement> {
  const pids = pid ? processTree(pid) : [];
  const cpuBefore = cpuMs(pids);
  let peak = 0;
  const sampler = setInterval(() => {
    for (const p of pids.slice(pid && pids.length > 1 ? 1 : 0)) peak = Math.max(peak, rssMiB(p));
  }, 100);
  const result = await autocannon({
    url: `${url}/v1/chat/completions`,
    method: "POST",
    connections: CONNECTIONS,
    duration: SECONDS,
    headers: { "content-type": "application/json", ...headers },
    body: CHAT_BODY,
    ...(varyBody
      ? {
          requests: [
            {
              setupRequest: (req: autocannon.Request) => ({
                ...req,
                body: CHAT_BODY.replace(
                  "What are my options?",
                  `What are my options? (${RUN_ID}-${variant++})`,
                ),
              }),
            },
          ],
        }
      : {}),
  });
  clearInterval(sampler);
  const total = result.requests.total || 1;
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuPerReqMs: pid ? (cpuMs(pids) - cpuBefore) / total : NaN,
    peakRssMiB: peak,
    non2xx: result.non2xx + result.errors,
  };
}

async function ttfbMs(url: string, headers: Record<string, string>, n = 30): Promise<number> {
  const body = JSON.stringify({ model: "bench", stream: true, messages: [{ role: "user", content: "hi" }] });
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
    });
    const reader = res.body!.getReader();
    let first = true;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (first && value && new TextDecoder().decode(value).includes('"content"')) {
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
        first = false;
      }
    }
  }
  return median(times);
}

/** The proxy's response-cache lookups so far (its /metrics, all workers). */
async function cacheLookups(url: string): Promise<{ hit: number; miss: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const count = (result: string) =>
    Number(
      new RegExp(`^llmproxy_cache_lookups_total\\{result="${result}"\\} (\\d+)`, "m").exec(text)?.[1] ?? 0,
    );
  return { hit: count("hit"), miss: count("miss") };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
}

const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");

async function main(): Promise<void> {
  const started = Date.now();
  const admin = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
  await admin.connect();
  const dbName = `llmp_bench_${process.pid}`;
  await admin.query(`CREATE DATABASE ${dbName}`);
  const databaseUrl = `postgres://postgres@127.0.0.1:5432/${dbName}`;
  const procs: ChildProcess[] = [];
  try {
    const upstream = await startNode("upstream", path.join(DIST, "upstream.js"), ["0"]);
    procs.push(upstream.proc);
    const passthrough = await startNode("passthrough", path.join(DIST, "passthrough.js"), [
      "0",
      upstream.url,
    ]);
    procs.push(passthrough.proc);
    const koaForward = await startNode("koa-forward", path.join(DIST, "koa-forward.js"), ["0", upstream.url]);
    procs.push(koaForward.proc);
    const models = `providers:\n  up: { type: openai, base_url: "${upstream.url}/v1", max_retries: 0 }\nmodels:\n  - { name: bench, provider: up, model: bench-model }\n`;
    const bare = `${models}pii: { enabled: false }\n`;
    const limits =
      `${bare}limits:\n  key: { requests_per_minute: 100000000, tokens_per_minute: 1000000000000, tokens_per_day: 1000000000000 }\n` +
      `  team: { requests_per_minute: 100000000, tokens_per_minute: 1000000000000, tokens_per_day: 1000000000000 }\n`;
    const content = `${models}content_policy:\n  blocked_patterns: ["Project Falcon", "/\\\\bignore (all )?previous instructions\\\\b/i", "/\\\\bDROP\\\\s+TABLE\\\\b/i"]\n`;
    const redis = { REDIS_URL: "redis://127.0.0.1:6379", CACHE_ENABLED: "true", CACHE_TTL_SECONDS: "600" };

    const core = await startProxy("core", databaseUrl, bare);
    const startupMs = [core.readyMs];
    const limited = await startProxy("limits", databaseUrl, limits, redis);
    const contentProxy = await startProxy("content", databaseUrl, content);
    procs.push(core.proc, limited.proc, contentProxy.proc);
    for (const p of [core, limited]) startupMs.push(p.readyMs);
    const keys = {
      core: await createKey(core.url),
      limits: await createKey(limited.url),
      content: await createKey(contentProxy.url),
    };
    const auth = (k: string) => ({ authorization: `Bearer ${k}` });

    const targets: Array<{
      name: string;
      url: string;
      headers: Record<string, string>;
      pid: number | null;
      vary: boolean;
    }> = [
      { name: "upstream", url: upstream.url, headers: {}, pid: upstream.proc.pid!, vary: false },
      { name: "passthrough", url: passthrough.url, headers: {}, pid: passthrough.proc.pid!, vary: false },
      { name: "koa-forward", url: koaForward.url, headers: {}, pid: koaForward.proc.pid!, vary: false },
      { name: "proxy-core", url: core.url, headers: auth(keys.core), pid: core.proc.pid!, vary: false },
      {
        name: "proxy-limits",
        url: limited.url,
        headers: auth(keys.limits),
        pid: limited.proc.pid!,
        vary: true,
      },
      {
        name: "proxy-hit",
        url: limited.url,
        headers: auth(keys.limits),
        pid: limited.proc.pid!,
        vary: false,
      },
      {
        name: "proxy-content",
        url: contentProxy.url,
        headers: auth(keys.content),
        pid: contentProxy.proc.pid!,
        // Each request's last sentence differs, like a conversation's new turn: an identical body would flatter
        // the count and verdict caches (the system prompt and the phone number still repeat, as they do).
        vary: true,
      },
    ];
    // Warm up every target (JIT, pools, caches).
    for (const t of targets) await load(t.url, t.headers, null, t.vary).catch(() => undefined);
    const results = new Map<string, Measurement[]>(targets.map((t) => [t.name, []]));
    // What the cache answered during each measured load of the cached proxy, from its own metrics.
    const lookups = new Map<string, { hit: number; miss: number }>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of targets) {
        const cached = t.url === limited.url;
        const before = cached ? await cacheLookups(t.url) : null;
        results.get(t.name)!.push(await load(t.url, t.headers, t.pid, t.vary));
        if (before) {
          const after = await cacheLookups(t.url);
          const sum = lookups.get(t.name) ?? { hit: 0, miss: 0 };
          lookups.set(t.name, {
            hit: sum.hit + after.hit - before.hit,
            miss: sum.miss + after.miss - before.miss,
          });
        }
        process.stderr.write(".");
      }
    }
    process.stderr.write("\n");

    // Time to first byte on a paced stream (50 ms between chunks), sequential requests.
    const ttfbUpstream = await ttfbMs(upstream.url, {});
    const ttfbPassthrough = await ttfbMs(passthrough.url, {});
    const ttfbProxy = await ttfbMs(core.url, auth(keys.core));

    // Start to ready with an external PostgreSQL (migrations already applied), two more samples.
    for (let i = 0; i < 2; i++) {
      const p = await startProxy(`startup${i}`, databaseUrl, bare);
      startupMs.push(p.readyMs);
      p.proc.kill("SIGTERM");
      await new Promise((r) => p.proc.once("exit", r));
    }

    // Each round's ratio is taken against the passthrough of the same round, then the median over rounds: the
    // host's load drifts between rounds, and a ratio of medians taken at different moments would carry that drift.
    const passRounds = results.get("passthrough")!.map((m) => m.rps);
    const ratio = (ms: Measurement[]) => median(ms.map((m, i) => m.rps / passRounds[i]));
    const lines: string[] = [];
    lines.push(`### Load (${ROUNDS} alternating rounds × ${SECONDS} s, ${CONNECTIONS} connections, medians)`);
    lines.push("");
    lines.push(
      "| target | req/s | × passthrough (per round) | p50 ms | p99 ms | CPU ms/req | peak RSS MiB (per worker) | errors |",
    );
    lines.push("|---|---|---|---|---|---|---|---|");
    for (const t of targets) {
      const ms = results.get(t.name)!;
      const rps = median(ms.map((m) => m.rps));
      lines.push(
        `| ${t.name} | ${fmt(rps)} | ${fmt(ratio(ms), 2)} (${ms.map((m, i) => fmt(m.rps / passRounds[i], 2)).join(" ")}) | ${fmt(median(ms.map((m) => m.p50)), 1)} | ${fmt(median(ms.map((m) => m.p99)), 1)} | ${fmt(median(ms.map((m) => m.cpuPerReqMs)), 3)} | ${fmt(Math.max(...ms.map((m) => m.peakRssMiB)), 0)} | ${ms.reduce((a, m) => a + m.non2xx, 0)} |`,
      );
    }
    lines.push("");
    lines.push(
      `Cache answers during the measured loads: ${[...lookups]
        .map(([name, l]) => `${name} ${l.hit} hits / ${l.miss} misses`)
        .join(", ")}.`,
    );
    lines.push("");
    lines.push("### Streaming and start-up");
    lines.push("");
    lines.push("| measure | value |");
    lines.push("|---|---|");
    lines.push(`| TTFB upstream direct (median of 30) | ${fmt(ttfbUpstream, 2)} ms |`);
    lines.push(`| TTFB via bare passthrough | ${fmt(ttfbPassthrough, 2)} ms |`);
    lines.push(`| TTFB via proxy-core | ${fmt(ttfbProxy, 2)} ms |`);
    lines.push(`| **TTFB added by the proxy** | **${fmt(ttfbProxy - ttfbUpstream, 2)} ms** |`);
    lines.push(
      `| process start → /readyz 200, external PostgreSQL (median of ${startupMs.length}) | ${fmt(median(startupMs))} ms |`,
    );
    lines.push("");
    process.stdout.write(`${lines.join("\n")}\n`);
    lines.length = 0;
    lines.push("### Rate limiter alone (local Redis)");
    lines.push("");
    lines.push(await runLimiterBench().then(formatLimiterBench, (e: Error) => `failed: ${e.message}`));
    lines.push("");
    lines.push("### PII scrubber alone (one core)");
    lines.push("");
    try {
      lines.push(formatPiiBench(runPiiBench()));
    } catch (error) {
      lines.push(`failed: ${(error as Error).message}`);
    }
    lines.push("");
    lines.push(
      `Run took ${Math.round((Date.now() - started) / 1000)} s on ${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, Node ${process.version}.`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    for (const p of procs) p.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 1000));
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`bench failed: ${(error as Error).stack}\n`);
    process.exit(1);
  },
);
