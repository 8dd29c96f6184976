/**
 * A real Chroma server for tests: the `chromadb` npm package's server on a free port with its data in a temp
 * directory; `stop()` kills it and removes the directory.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startChromaServer, type ChromaServer } from "../../service/adapters/chroma-server";

export interface TestChroma {
  url: string;
  port: number;
  dataDir: string;
  server: ChromaServer;
  stop(): Promise<void>;
}

export async function startTestChroma(): Promise<TestChroma> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-chroma-"));
  const server = await startChromaServer({ dataDir });
  return {
    url: server.url,
    port: server.port,
    dataDir,
    server,
    async stop() {
      await server.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Wrap an object so every method call is counted by name (to prove that a path makes no Chroma or embedding call). */
export function countingProxy<T extends object>(
  target: T,
): { value: T; calls: Record<string, number>; total(): number } {
  const calls: Record<string, number> = {};
  const value = new Proxy(target, {
    get(obj, prop, receiver) {
      const v = Reflect.get(obj, prop, receiver);
      if (typeof v !== "function" || typeof prop !== "string") return v;
      return (...args: unknown[]) => {
        calls[prop] = (calls[prop] ?? 0) + 1;
        return (v as (...a: unknown[]) => unknown).apply(obj, args);
      };
    },
  });
  return { value, calls, total: () => Object.values(calls).reduce((a, b) => a + b, 0) };
}

/** A knowledge-base test document's paragraph: `n` sentences about `topic` (its word comes back in every one). */
export const paragraph = (topic: string, n = 3) =>
  Array.from(
    { length: n },
    (_, i) =>
      `The ${topic} subsystem, part ${i}, is configured through the ${topic} section of the config file.`,
  ).join(" ");
