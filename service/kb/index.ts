/**
 * Knowledge-base wiring for deps.ts: the KnowledgeBase over Chroma when CHROMA_URL is set. The embedded default's
 * Chroma server is started by the primary (adapters/embedded-chroma.ts, over adapters/chroma-server.ts).
 */
import type { Logger } from "pino";
import type { Config } from "../config";
import type { ProviderRegistry } from "../providers/registry";
import { createChromaStore } from "../adapters/chroma";
import type { WriteLock } from "../adapters/pg-kb-lock";
import { KnowledgeBase } from "./knowledge-base";

export { KnowledgeBase, chunkId, type Embed, type KnowledgeBaseOptions } from "./knowledge-base";
export { startChromaServer, type ChromaServer, type ChromaServerOptions } from "../adapters/chroma-server";

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
