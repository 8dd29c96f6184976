import { spawn } from "node:child_process";
import path from "node:path";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { createLogger, lineWriter } from "../../../service/logger";

function capture(options: pino.LoggerOptions = {}) {
  const lines: string[] = [];
  const log = pino(
    { level: "info", base: { pid: 7 }, timestamp: () => ',"time":"T"', ...options },
    { write: (s: string) => void lines.push(s) },
  );
  return { log, lines };
}

const fields = {
  requestId: "r-1",
  route: "chat",
  status: 200,
  ms: 3,
  model: 'quote " backslash \\ newline \n',
  served: null,
  promptTokens: 12,
  completionTokens: Number.NaN,
  code: null,
  cache: undefined,
};

describe("the access line writer", () => {
  it("writes byte for byte what pino writes for the same call, bindings included", () => {
    const { log, lines } = capture();
    for (const logger of [log, log.child({ worker: 2 })]) {
      lines.length = 0;
      logger.info(fields, "request finished");
      lineWriter(logger, "request finished")("info", fields);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toBe(lines[0]);
      expect(JSON.parse(lines[1])).toMatchObject({
        level: 30,
        pid: 7,
        model: fields.model,
        msg: "request finished",
      });
    }
  });

  it("matches the service's own logger (its timestamp and base)", () => {
    const log = createLogger("info", { worker: 1 });
    const stream = (log as unknown as Record<symbol, { write(s: string): void }>)[pino.symbols.streamSym];
    const lines: string[] = [];
    const write = stream.write;
    stream.write = (s: string) => void lines.push(s);
    try {
      lineWriter(log, "request finished")("info", fields);
    } finally {
      stream.write = write;
    }
    const line = JSON.parse(lines[0]);
    expect(line).toMatchObject({
      level: 30,
      pid: process.pid,
      worker: 1,
      requestId: "r-1",
      completionTokens: null,
    });
    expect(new Date(line.time).getTime()).toBeGreaterThan(0);
    expect(Object.keys(line)).not.toContain("cache");
  });

  it("respects the level", () => {
    const { log, lines } = capture();
    lineWriter(log, "request finished")("debug", fields);
    expect(lines).toHaveLength(0);
    log.level = "debug";
    lineWriter(log, "request finished")("debug", fields);
    expect(JSON.parse(lines[0]).level).toBe(20);
  });

  it("leaves the line to pino when the logger changes lines (a mixin)", () => {
    const { log, lines } = capture({ mixin: () => ({ zone: "eu" }) });
    lineWriter(log, "request finished")("info", fields);
    expect(JSON.parse(lines[0])).toMatchObject({ zone: "eu", requestId: "r-1" });
  });
});

describe("block-buffered stdout (LOG_FLUSH_MS)", () => {
  // A child process owns its stdout; the parent sees when bytes arrive and in how many writes. Times are taken from
  // the child's "ready" on stderr (unbuffered), written once its logger exists, so a slow start does not count.
  const ROOT = path.resolve(__dirname, "../../..");
  function child(script: string) {
    const proc = spawn(process.execPath, ["-e", script], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const chunks: Array<{ at: number; text: string }> = [];
    let ready = NaN;
    proc.stderr!.on("data", (d: Buffer) => {
      if (Number.isNaN(ready) && d.toString().includes("ready")) ready = Date.now();
    });
    proc.stdout!.on("data", (d: Buffer) => chunks.push({ at: Date.now(), text: d.toString() }));
    const exited = new Promise<number | null>((r) => proc.once("close", r)).then((code) => {
      for (const c of chunks) c.at -= ready;
      return code;
    });
    return { chunks, exited };
  }
  const setup = `const { createLogger, lineWriter } = require("./dist/service/logger.js");
    const log = createLogger("info", { role: "worker" }, { flushMs: 300 });
    const line = lineWriter(log, "request finished");
    process.stderr.write("ready\\n");`;

  it("holds lines until the flush interval, then writes them together, unchanged", async () => {
    const { chunks, exited } = child(
      `${setup}
      for (let i = 0; i < 5; i++) line("info", { i });
      log.info({ n: 1 }, "an info line");
      setTimeout(() => process.exit(0), 1200);`,
    );
    await exited;
    const text = chunks.map((c) => c.text).join("");
    const lines = text
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.i ?? l.msg)).toEqual([0, 1, 2, 3, 4, "an info line"]);
    expect(lines[0]).toMatchObject({ level: 30, role: "worker", msg: "request finished" });
    // Nothing before the first flush tick; everything in one write at it.
    expect(chunks[0]!.at).toBeGreaterThanOrEqual(250);
    expect(chunks).toHaveLength(1);
  });

  it("writes a warning or an error at once, with the lines held before it", async () => {
    const { chunks, exited } = child(
      `${setup}
      line("info", { i: 0 });
      log.debug("not at this level");
      log.warn({ n: 1 }, "a warning");
      setTimeout(() => { line("info", { i: 1 }); log.error("an error"); }, 400);
      setTimeout(() => process.exit(0), 1200);`,
    );
    await exited;
    // The first write comes at once, well before the 300 ms tick, and carries the held line and the warning.
    expect(chunks[0]!.at).toBeLessThan(150);
    expect(
      chunks[0]!.text
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).msg),
    ).toEqual(["request finished", "a warning"]);
    const all = chunks.map((c) => c.text).join("");
    expect(
      all
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).msg),
    ).toEqual(["request finished", "a warning", "request finished", "an error"]);
  });

  it("writes a full block at once, and what is left when the process exits, even at once", async () => {
    const { chunks, exited } = child(
      `${setup}
      for (let i = 0; i < 200; i++) line("info", { i, pad: "x".repeat(40) });
      log.fatal({ code: 1 }, "going down");
      process.exit(3);`,
    );
    expect(await exited).toBe(3);
    const lines = chunks
      .map((c) => c.text)
      .join("")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(201);
    expect(lines.at(-1)).toMatchObject({ level: 60, msg: "going down" });
    expect(lines.slice(0, 200).map((l) => l.i)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  /**
   * A child whose stdout the parent does not read until `readAll()`. Touching process.stdout makes fd 1 non-blocking
   * on a pipe: writes past the pipe's 64 KiB then fail with EAGAIN.
   */
  function unreadChild(script: string) {
    const proc = spawn(process.execPath, ["-e", `${setup}\n void process.stdout;\n${script}`], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    proc.stdout!.pause();
    return {
      stderr: () => err,
      async readAll(): Promise<{ code: number | null; lines: string[] }> {
        const chunks: Buffer[] = [];
        proc.stdout!.on("data", (d: Buffer) => chunks.push(d));
        proc.stdout!.resume();
        const code = await new Promise<number | null>((r) => proc.once("close", r));
        return { code, lines: Buffer.concat(chunks).toString().trim().split("\n") };
      },
    };
  }

  it("waits for a slow reader of a full non-blocking pipe instead of dropping lines", async () => {
    const child = unreadChild(
      `for (let i = 0; i < 3000; i++) line("info", { i, pad: "y".repeat(100) });
      log.flush();
      process.stderr.write("done\\n");`,
    );
    // The child is stuck on the full pipe until the parent reads: it cannot have finished yet.
    await new Promise((r) => setTimeout(r, 700));
    expect(child.stderr()).not.toContain("done");
    const { code, lines } = await child.readAll();
    expect(code).toBe(0);
    expect(child.stderr()).toContain("done");
    expect(lines.map((l) => (JSON.parse(l) as { i: number }).i)).toEqual(
      Array.from({ length: 3000 }, (_, i) => i),
    );
  });

  it("drops lines rather than stall for long behind a reader that stopped, and writes again once it reads", async () => {
    const child = unreadChild(
      `const t0 = Date.now();
      for (let i = 0; i < 3000; i++) line("info", { i, pad: "z".repeat(100) });
      log.flush();
      process.stderr.write("done " + (Date.now() - t0) + "\\n");
      setTimeout(() => { line("info", { i: "after" }); log.flush(); process.exit(0); }, 5000);`,
    );
    // Nothing is read for 4 s: the child waits ~2 s for the first block that does not fit, then drops the rest.
    await new Promise((r) => setTimeout(r, 4000));
    expect(child.stderr()).toMatch(/done \d+/);
    expect(Number(/done (\d+)/.exec(child.stderr())![1])).toBeLessThan(3500);
    const { code, lines } = await child.readAll();
    expect(code).toBe(0);
    // A block cut by a partial write and then dropped leaves one broken line; the rest are whole.
    const seen = lines.flatMap((l) => {
      try {
        return [(JSON.parse(l) as { i: number | string }).i];
      } catch {
        return [];
      }
    });
    // Lines in order; some were dropped; the line after the reader came back arrived.
    const numbers = seen.filter((i): i is number => typeof i === "number");
    expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
    expect(numbers.length).toBeGreaterThan(0);
    expect(numbers.length).toBeLessThan(3000);
    expect(seen.at(-1)).toBe("after");
  }, 20_000);

  it("keeps lines in order at exit while the thread pool is busy (no block in flight elsewhere)", async () => {
    const { chunks, exited } = child(
      `${setup}
      const crypto = require("node:crypto");
      for (let k = 0; k < 4; k++) crypto.pbkdf2("p", "s", 2000000, 32, "sha256", () => {});
      for (let i = 0; i < 100; i++) line("info", { i, pad: "x".repeat(60) });
      process.exit(0);`,
    );
    await exited;
    const ids = chunks
      .map((c) => c.text)
      .join("")
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { i: number }).i);
    expect(ids).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it("logger.flush() writes what is held at once", async () => {
    const { chunks, exited } = child(
      `${setup}
      line("info", { i: 0 });
      log.flush();
      setTimeout(() => process.exit(0), 600);`,
    );
    await exited;
    expect(chunks[0]!.at).toBeLessThan(150);
    expect(JSON.parse(chunks[0]!.text)).toMatchObject({ i: 0, msg: "request finished" });
  });

  it("with flushMs 0 writes every line at once (pino's default)", async () => {
    const { chunks, exited } = child(
      `const { createLogger } = require("./dist/service/logger.js");
      const log = createLogger("info", {}, { flushMs: 0 });
      process.stderr.write("ready\\n");
      log.info("one");
      setTimeout(() => { log.info("two"); setTimeout(() => process.exit(0), 300); }, 300);`,
    );
    await exited;
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    expect(chunks[0]!.text).toContain('"msg":"one"');
    expect(chunks[0]!.at).toBeLessThan(150);
  });
});
