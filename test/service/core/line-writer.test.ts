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
