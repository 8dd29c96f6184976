/**
 * Knowledge-base wiring for deps.ts: the KnowledgeBase over Chroma when CHROMA_URL is set. The embedded default's
 * Chroma server is started by the primary (adapters/embedded-chroma.ts, over adapters/chroma-server.ts).
 */
import fs from "node:fs";
import type { Logger } from "pino";
import { codeOf } from "../errors";
import { StartupError } from "../lib/startup";
import type { Config } from "../config";
import type { ProviderRegistry } from "../providers/registry";
import { createChromaStore } from "../adapters/chroma";
import type { WriteLock } from "../adapters/pg-kb-lock";
import { KnowledgeBase } from "./knowledge-base";

export { KnowledgeBase, chunkId, type Embed, type KnowledgeBaseOptions } from "./knowledge-base";
export { startChromaServer, type ChromaServer, type ChromaServerOptions } from "../adapters/chroma-server";

/**
 * KB_DIR, when it exists, is a folder (created on the first upload when missing; it may be read-only, a mounted
 * ConfigMap for directory ingestion): a file there would fail every knowledge-base call, found out only then.
 */
function requireKbDir(dir: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (error) {
    if (codeOf(error) === "ENOENT") return;
    throw new StartupError(
      `env KB_DIR: ${dir} cannot be read (${codeOf(error) || (error as Error).message}); point KB_DIR at a readable folder`,
    );
  }
  if (!stat.isDirectory())
    throw new StartupError(`env KB_DIR: ${dir} is not a folder; point KB_DIR at a folder (or unset it)`);
}

/**
 * The knowledge base for this config, or null (RAG off) when there is no Chroma URL or no embedding deployment;
 * either way the reason is logged once. `chromaUrl` overrides `config.chroma.url` (an embedded server's URL).
 */
export function createKnowledgeBaseFromConfig(
  config: Config,
  providers: Pick<ProviderRegistry, "embed">,
  log: Logger,
  opts: {
    chromaUrl?: string | null;
    /** Applied to every text sent to the embedding model (chunks at ingestion, search queries): the PII redaction. */
    redact?: (text: string) => string;
    /** Cross-process write lock (every worker and replica of a shared database); none for a single process. */
    lock?: WriteLock;
  } = {},
): KnowledgeBase | null {
  const url = opts.chromaUrl ?? config.chroma.url;
  const { redact } = opts;
  if (!url) {
    log.info("RAG off: no CHROMA_URL");
    return null;
  }
  const model = config.embeddingModel;
  if (!model) {
    log.warn("RAG off: no embedding deployment (set embedding_model in the config file)");
    return null;
  }
  requireKbDir(config.kbDir);
  log.info({ collection: config.rag.collection, embeddingModel: model, kbDir: config.kbDir }, "RAG on");
  return new KnowledgeBase({
    store: createChromaStore({ url, collection: config.rag.collection, embeddingModel: model }),
    embed: redact
      ? (texts, signal) => providers.embed(model, texts.map(redact), signal)
      : (texts, signal) => providers.embed(model, texts, signal),
    kbDir: config.kbDir,
    rag: config.rag,
    embeddingModel: model,
    log,
    ...(opts.lock ? { lock: opts.lock } : {}),
  });
}
