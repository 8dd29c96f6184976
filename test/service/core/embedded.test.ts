/**
 * The README's first command on a machine with nothing but Node: `npm start` runs `node dist/service/main.js
 * --embedded` with no DATABASE_URL, no master key and no Redis. It must start on PGlite under ./data, generate and
 * store a master key, print the URL, where the key is and a working example, serve the mock model, record usage
 * (through the embedded database's INSERT path: PGlite has no COPY) and keep everything across a restart.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../../helpers/postgres";

const MAIN = path.resolve(__dirname, "../../../dist/service/main.js");

interface Started {
  proc: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<number | null>;
}

const running: ChildProcess[] = [];
const dirs: string[] = [];
afterAll(() => {
  for (const p of running) p.kill("SIGKILL");
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Start in `cwd` as `npm start` does: only PATH, HOME and a port (8000 may be taken on a test machine). */
async function start(cwd: string, port: number): Promise<Started> {
  const proc = spawn(process.execPath, [MAIN, "--embedded"], {
    cwd,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? cwd, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.push(proc);
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`exited with ${proc.exitCode}:\n${out}`);
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`not ready in time:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, url, output: () => out, exited };
}

async function stop(p: Started): Promise<number | null> {
  p.proc.kill("SIGTERM");
  return p.exited;
}

async function chat(url: string, key: string): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "Hello!" }] }),
  });
}

/** The usage report's request count for mock-chat, polled until it reaches `n` (rows are written in batches). */
async function waitForRequests(url: string, masterKey: string, n: number): Promise<number> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const res = await fetch(`${url}/internal/usage?group_by=model`, {
      headers: { authorization: `Bearer ${masterKey}` },
    });
    const body = (await res.json()) as { data: Array<{ group: string; requests: number }> };
    const requests = body.data.find((g) => g.group === "mock-chat")?.requests ?? 0;
    if (requests >= n || Date.now() > deadline) return requests;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("the embedded default (`npm start`)", () => {
  it("starts with nothing configured, serves the mock model, records usage and keeps it all across a restart", async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-embedded-"));
    dirs.push(cwd);
    const port = await freePort();
    const first = await start(cwd, port);

    // What a newcomer is told: the URL, where the master key is, and an example with the mock model.
    const keyFile = path.join(cwd, "data", "master-key");
    expect(first.output()).toContain(`http://127.0.0.1:${port}`);
    expect(first.output()).toContain(keyFile);
    expect(first.output()).toContain('"model":"mock-chat"');
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    const masterKey = fs.readFileSync(keyFile, "utf8").trim();
    expect(masterKey.length).toBeGreaterThanOrEqual(32);
    // The key is in the file, not in the output.
    expect(first.output()).not.toContain(masterKey);

    const created = await fetch(`${first.url}/internal/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "demo" }),
    });
    expect(created.status).toBe(201);
    const { key } = (await created.json()) as { key: string };
    const answer = await chat(first.url, key);
    expect(answer.status).toBe(200);
    const completion = (await answer.json()) as { choices: Array<{ message: { content: string } }> };
    expect(completion.choices[0].message.content.length).toBeGreaterThan(0);
    expect(await waitForRequests(first.url, masterKey, 1)).toBe(1);
    expect(await stop(first)).toBe(0);

    // Same directory again: the same master key, the API key and the usage are still there.
    const second = await start(cwd, port);
    // A second instance on the same directory (another port) is refused before it opens the database: two would
    // each keep their own copy, and one's keys and usage would be lost.
    const other = spawn(process.execPath, [MAIN, "--embedded"], {
      cwd,
      env: { PATH: process.env.PATH ?? "", HOME: cwd, PORT: String(await freePort()) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.push(other);
    let refused = "";
    other.stdout!.on("data", (d: Buffer) => (refused += d.toString()));
    other.stderr!.on("data", (d: Buffer) => (refused += d.toString()));
    expect(await new Promise((resolve) => other.once("exit", resolve))).toBe(1);
    expect(refused).toContain(`is in use by another llm-proxy (pid ${second.proc.pid})`);
    expect(refused).not.toMatch(/\n\s+at /);
    expect((await chat(second.url, key)).status).toBe(200); // the running one is untouched
    expect(fs.readFileSync(keyFile, "utf8").trim()).toBe(masterKey);
    expect((await chat(second.url, key)).status).toBe(200);
    expect(await waitForRequests(second.url, masterKey, 3)).toBe(3);
    expect(await stop(second)).toBe(0);
    expect(fs.existsSync(path.join(cwd, "data", "llm-proxy.lock"))).toBe(false);
    expect(second.output()).not.toMatch(/"level":(50|60)/);
  }, 180_000);
});
