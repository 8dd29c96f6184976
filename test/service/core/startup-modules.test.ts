/**
 * Optional client libraries load only when their feature is configured: ioredis with a Redis URL, chromadb with a
 * Chroma URL, libphonenumber's metadata with a PII engine that scrubs phone numbers (at its creation, so no request
 * waits for it). A worker without them starts ~10 % sooner and ~15 MiB smaller (bench/RESULTS.md).
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(__dirname, "../../..");

/** The optional libraries present in a fresh process's module cache after running `code` (CommonJS, from dist/). */
function loadedAfter(code: string): string[] {
  const script = `${code}
const found = new Set();
for (const file of Object.keys(require.cache)) {
  const m = /node_modules\\/(ioredis|chromadb|libphonenumber-js)\\//.exec(file);
  if (m) found.add(m[1]);
}
process.stdout.write(JSON.stringify([...found].sort()));`;
  return JSON.parse(
    execFileSync(process.execPath, ["-e", script], { cwd: ROOT, encoding: "utf8" }),
  ) as string[];
}

describe("optional libraries load with their feature", () => {
  it("a worker's modules load none of ioredis, chromadb and libphonenumber", () => {
    expect(loadedAfter(`require("./dist/service/worker.js");`)).toEqual([]);
  });

  it("each loads with its feature: a Redis client, a Chroma store, a PII engine that scrubs phone numbers", () => {
    expect(
      loadedAfter(`
const { createPiiEngine } = require("./dist/service/lib/pii");
createPiiEngine({ enabled: true, names: "off", entities: { PHONE_NUMBER: false }, allowList: [] });
createPiiEngine({ enabled: false, names: "off", entities: {}, allowList: [] });`),
    ).toEqual([]);
    expect(
      loadedAfter(`
const { createPiiEngine } = require("./dist/service/lib/pii");
createPiiEngine({ enabled: true, names: "off", entities: {}, allowList: [] });`),
    ).toEqual(["libphonenumber-js"]);
    expect(
      loadedAfter(`
const pino = require("pino");
const { createRedisClient } = require("./dist/service/adapters/redis");
createRedisClient({ url: "redis://127.0.0.1:6379", log: pino({ level: "silent" }) }).disconnect();`),
    ).toEqual(["ioredis"]);
    expect(
      loadedAfter(`
const { createChromaStore } = require("./dist/service/adapters/chroma");
createChromaStore({ url: "http://127.0.0.1:9", collection: "kb" });`),
    ).toEqual(["chromadb"]);
  });
});
