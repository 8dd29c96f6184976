/**
 * Chroma adapter: one collection of knowledge-base chunks with embeddings computed by the proxy (no embedding
 * function on the client side, so nothing is imported or downloaded), cosine space.
 *
 * Chroma collection names need at least 3 characters, while the configured collection (`rag.collection`, also the
 * name in `rag:<collection>` scopes) may have 2 ("kb"), so the Chroma name is always `llmproxy-<collection>`.
 */
import type { Collection, Metadata, Where } from "chromadb";
import { ConflictError, ServiceUnavailableError } from "../errors";

/** The Chroma client library, loaded with the first store: without CHROMA_URL (RAG off) it is never loaded. */
function chromadb(): typeof import("chromadb") {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require("chromadb") as typeof import("chromadb");
}

export interface ChunkRecord {
  /** Deterministic id (source + chunk index), so re-ingesting overwrites in place. */
  id: string;
  text: string;
  embedding: number[];
  /** Path relative to KB_DIR, POSIX separators. */
  source: string;
  chunkIndex: number;
  heading: string;
}

export interface VectorHit {
  id: string;
  text: string;
  source: string;
  chunkIndex: number;
  heading: string;
  /** Cosine distance (0 = same direction, 2 = opposite); similarity = 1 - distance. */
  distance: number;
}

/** What the knowledge base needs from a vector store (a port, so tests can count calls). */
export interface VectorStore {
  /** The Chroma collection name. */
  readonly name: string;
  upsert(records: ChunkRecord[]): Promise<void>;
  /** The most records one upsert may carry (the server's limit: 5,461 for a local Chroma, less on hosted ones). */
  maxBatchSize(): Promise<number>;
  /** Delete every chunk of `source` whose index is ≥ `fromIndex` (0: all of them). */
  deleteSource(source: string, fromIndex?: number): Promise<void>;
  /** `deleteSource(source, keep)` for many sources in one call (the leftovers of re-ingested files). */
  deleteLeftovers(sources: readonly { source: string; keep: number }[]): Promise<void>;
  /** Number of chunks of one source. */
  countSource(source: string): Promise<number>;
  count(): Promise<number>;
  /** Distinct sources with their chunk counts (pages through metadata; an admin operation, not a hot path). */
  sources(): Promise<Map<string, number>>;
  /** Delete and recreate the collection. */
  reset(): Promise<void>;
  /** Nearest chunks to `embedding`, closest first. */
  query(embedding: number[], topK: number): Promise<VectorHit[]>;
  /** True when the server answers its heartbeat. */
  ping(): Promise<boolean>;
  /** The embedding model the collection's vectors were made with (recorded in its metadata), or null. */
  builtWith(): Promise<string | null>;
}

export interface ChromaStoreOptions {
  /** Server URL, e.g. http://127.0.0.1:8000 (CHROMA_URL). */
  url: string;
  /** Configured collection name (rag.collection). */
  collection: string;
  /**
   * The embedding deployment that makes the vectors (`embedding_model`). Recorded in the collection's metadata when
   * first opened; a collection built with another model refuses upserts and queries (409) until it is reset: its
   * vectors are not comparable (another dimension fails deep inside Chroma; the same one silently retrieves noise).
   */
  embeddingModel?: string;
}

/** The collection-metadata key recording the embedding model. */
const MODEL_KEY = "llmproxy_embedding_model";

/** Chroma's name for a configured collection. */
export function chromaCollectionName(collection: string): string {
  return `llmproxy-${collection}`;
}

const PAGE = 1000;

/** A connection failure becomes a 503 for the /internal/kb API (the RAG stage catches every error anyway). */
function unreachable(error: unknown): unknown {
  if (!(error instanceof chromadb().ChromaConnectionError)) return error;
  return new ServiceUnavailableError("knowledge base unreachable (Chroma does not answer)", "kb_unavailable");
}

export function createChromaStore(opts: ChromaStoreOptions): VectorStore {
  const url = new URL(opts.url);
  const ssl = url.protocol === "https:";
  const client = new (chromadb().ChromaClient)({
    host: url.hostname,
    port: url.port ? Number(url.port) : ssl ? 443 : 80,
    ssl,
  });
  const name = chromaCollectionName(opts.collection);
  let collection: Promise<Collection> | null = null;
  let maxBatch: number | null = null;
  /** The model recorded on the open collection. */
  let recorded: string | null = null;

  const open = (): Promise<Collection> => {
    collection ??= client
      .getOrCreateCollection({ name, embeddingFunction: null, configuration: { hnsw: { space: "cosine" } } })
      .then(async (c) => {
        const found = c.metadata?.[MODEL_KEY];
        recorded = typeof found === "string" ? found : null;
        // A new collection, or one from before the model was recorded: it is this model's from now on.
        if (recorded === null && opts.embeddingModel) {
          await c.modify({ metadata: { ...(c.metadata ?? {}), [MODEL_KEY]: opts.embeddingModel } });
          recorded = opts.embeddingModel;
        }
        return c;
      })
      .catch((error: unknown) => {
        collection = null; // retry on the next call (Chroma may not be up yet)
        throw error;
      });
    return collection;
  };

  /**
   * Run `fn` on the collection; when it was deleted behind our back (a reset from another replica), look it up by
   * name again and retry once instead of failing every call until restart.
   */
  async function withCollection<T>(fn: (c: Collection) => Promise<T>): Promise<T> {
    try {
      const c = await open();
      try {
        return await fn(c);
      } catch (error) {
        if (!(error instanceof chromadb().ChromaNotFoundError)) throw error;
        collection = null;
        return await fn(await open());
      }
    } catch (error) {
      throw unreachable(error);
    }
  }

  /** Vectors go in or are compared only with the model the collection was built with. */
  const requireSameModel = () => {
    if (!opts.embeddingModel || recorded === null || recorded === opts.embeddingModel) return;
    throw new ConflictError(
      `The knowledge-base collection ${opts.collection} was built with the embedding model ${recorded}, but ` +
        `embedding_model is ${opts.embeddingModel}: their vectors cannot be compared. Reset it ` +
        `(POST /internal/kb/reset) and ingest again, or set embedding_model back to ${recorded}.`,
      "kb_embedding_model_mismatch",
    );
  };

  const sourceWhere = (source: string, fromIndex: number): Where =>
    fromIndex > 0
      ? { $and: [{ source: { $eq: source } }, { chunk_index: { $gte: fromIndex } }] }
      : { source: { $eq: source } };

  return {
    name,
    async upsert(records) {
      if (!records.length) return;
      await withCollection((c) => {
        requireSameModel();
        return c.upsert({
          ids: records.map((r) => r.id),
          embeddings: records.map((r) => r.embedding),
          documents: records.map((r) => r.text),
          metadatas: records.map((r): Metadata => ({
            source: r.source,
            chunk_index: r.chunkIndex,
            heading: r.heading,
          })),
        });
      });
    },
    async maxBatchSize() {
      if (maxBatch === null) {
        try {
          maxBatch = await client.getMaxBatchSize();
        } catch (error) {
          throw unreachable(error);
        }
      }
      return maxBatch;
    },
    async deleteSource(source, fromIndex = 0) {
      await withCollection((c) => c.delete({ where: sourceWhere(source, fromIndex) }));
    },
    async deleteLeftovers(sources) {
      for (let i = 0; i < sources.length; i += 100) {
        const part = sources.slice(i, i + 100).map((x) => sourceWhere(x.source, x.keep));
        const where: Where = part.length === 1 ? part[0] : { $or: part };
        await withCollection((c) => c.delete({ where }));
      }
    },
    async countSource(source) {
      let total = 0;
      for (let offset = 0; ; offset += PAGE) {
        const page = await withCollection((c) =>
          c.get({ where: sourceWhere(source, 0), include: [], limit: PAGE, offset }),
        );
        total += page.ids.length;
        if (page.ids.length < PAGE) return total;
      }
    },
    count() {
      return withCollection((c) => c.count());
    },
    async sources() {
      const out = new Map<string, number>();
      for (let offset = 0; ; offset += PAGE) {
        const page = await withCollection((c) => c.get({ include: ["metadatas"], limit: PAGE, offset }));
        for (const m of page.metadatas) {
          const source = typeof m?.source === "string" ? m.source : "";
          out.set(source, (out.get(source) ?? 0) + 1);
        }
        if (page.ids.length < PAGE) return out;
      }
    },
    async reset() {
      collection = null;
      try {
        await client.deleteCollection({ name });
      } catch (error) {
        if (!(error instanceof chromadb().ChromaNotFoundError)) throw unreachable(error);
      }
      await open().catch((error: unknown) => {
        throw unreachable(error);
      });
    },
    async query(embedding, topK) {
      const result = await withCollection((c) => {
        requireSameModel();
        return c.query({
          queryEmbeddings: [embedding],
          nResults: topK,
          include: ["documents", "metadatas", "distances"],
        });
      });
      const hits: VectorHit[] = [];
      result.ids[0]?.forEach((id, i) => {
        const m = result.metadatas[0]?.[i] ?? {};
        hits.push({
          id,
          text: result.documents[0]?.[i] ?? "",
          source: typeof m.source === "string" ? m.source : "",
          chunkIndex: typeof m.chunk_index === "number" ? m.chunk_index : 0,
          heading: typeof m.heading === "string" ? m.heading : "",
          distance: result.distances[0]?.[i] ?? 2,
        });
      });
      return hits;
    },
    async builtWith() {
      return withCollection(async () => recorded);
    },
    async ping() {
      try {
        await client.heartbeat();
        return true;
      } catch {
        return false;
      }
    },
  };
}
