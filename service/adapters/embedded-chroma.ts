/**
 * The embedded default's knowledge base: a Chroma server from the `chromadb` npm package, data under
 * `<dataDir>/chroma`. If it cannot start (e.g. the native bindings do not load on this platform), RAG is off and
 * the start-up log says so; the proxy itself still starts.
 */
import path from "node:path";
import type { Logger } from "pino";
import type { Config } from "../config";
import { startChromaServer } from "./chroma-server";

export async function startEmbeddedChroma(
  config: Config,
  log: Logger,
): Promise<{ url: string; stop(): Promise<void> } | null> {
  try {
    const server = await startChromaServer({
      dataDir: path.join(config.dataDir, "chroma"),
      startTimeoutMs: 20_000,
    });
    log.info({ url: server.url }, "embedded Chroma started");
    return server;
  } catch (error) {
    log.warn({ err: error }, "RAG off: the embedded Chroma server did not start");
    return null;
  }
}
