/**
 * The knowledge base: files under KB_DIR, chunked by tokens, embedded through the proxy's own routing (any
 * configured embedding deployment) and stored in Chroma; hybrid retrieval (dense + BM25 over the dense candidates,
 * fused by reciprocal rank).
 *
 * Re-ingesting a source replaces its chunks without a gap: chunk ids are deterministic (hash of the source + chunk
 * index), so the new chunks overwrite the old ones in place, and only then are leftovers (indexes past the new
 * count) deleted. Queries running meanwhile see the old or the new version of a chunk, never an empty source, and
 * two replicas ingesting the same file converge on one copy. A source's chunks travel in one upsert call (Chroma
 * applies a call whole), so a write that fails midway leaves each source at its old or its new version, never a
 * mix — up to the server's batch limit per source (5,461 chunks on a local Chroma), past which a source is split.
 */
import crypto from "node:crypto";
import type { Logger } from "pino";
import type { Config } from "../config";
import type { ChunkRecord, VectorStore } from "../adapters/chroma";
import type { WriteLock } from "../adapters/pg-kb-lock";
import { InvalidRequestError, ProxyError } from "../errors";
import { bm25Scores } from "../lib/bm25";
import { chunkDocument } from "../lib/chunking";
import { reciprocalRankFusion } from "../lib/rrf";
import type {
  IngestReport,
  IngestedSource,
  KnowledgeBaseLike,
  KnowledgeBaseStats,
  RetrievedChunk,
} from "../stages/rag";
import { documentKind, SUPPORTED_EXTENSIONS } from "./file-types";
import { isWellFormed, KbFiles, type KbPath } from "./kb-files";

/** Embeds texts in order; one call per batch. */
export type Embed = (texts: string[], signal?: AbortSignal) => Promise<number[][]>;

export interface KnowledgeBaseOptions {
  store: VectorStore;
  embed: Embed;
  /** KB_DIR: the only folder files are read from or written to. */
  kbDir: string;
  rag: Config["rag"];
  /** Name of the embedding deployment (for stats). */
  embeddingModel: string;
  log: Logger;
  /** Texts per embedding call. Default 64. */
  embedBatchSize?: number;
  /** Dense candidates fetched per query: max(topK × this, 20), at most 100. Default 4. */
  candidateMultiplier?: number;
  /**
   * Runs a write holding a lock shared by every process writing this collection (other workers, other replicas).
   * Default none: writes are serialized within this process only (enough for a single process).
   */
  lock?: WriteLock;
}

/** Directory ingestion stores files in groups of about this many characters (≈ 64 chunks of 256 tokens). */
const GROUP_CHARS = 64_000;
/** Records per Chroma upsert call when several sources share one; a larger source goes alone, whole. */
const UPSERT_BATCH = 256;

/**
 * Upsert calls for `records` (grouped by source, in order): whole sources packed up to UPSERT_BATCH records a call; a
 * source with more records gets a call of its own, split only past the server's limit `max`.
 */
export function upsertCalls<T extends { source: string }>(records: T[], max: number): T[][] {
  const calls: T[][] = [];
  let current: T[] = [];
  for (let i = 0; i < records.length;) {
    let end = i;
    while (end < records.length && records[end].source === records[i].source) end++;
    const source = records.slice(i, end);
    i = end;
    if (current.length && current.length + source.length > Math.min(UPSERT_BATCH, max)) {
      calls.push(current);
      current = [];
    }
    if (source.length <= Math.min(UPSERT_BATCH, max)) current.push(...source);
    else for (let j = 0; j < source.length; j += max) calls.push(source.slice(j, j + max));
  }
  if (current.length) calls.push(current);
  return calls;
}

/** Characters of the query used for retrieval (≈ 2000 tokens, within every embedding model's input). */
export const MAX_QUERY_CHARS = 8_000;

/** Whether `source` lies under the directory source `dir` ("" is KB_DIR itself). */
function isUnder(source: string, dir: string): boolean {
  return dir === "" || source.startsWith(`${dir}/`);
}

/** Stable chunk id: 16 hex of SHA-256 over the source, then the chunk index. */
export function chunkId(source: string, index: number): string {
  return `${crypto.createHash("sha256").update(source).digest("hex").slice(0, 16)}:${index}`;
}

/**
 * A directory ingest that fails after storing some files: the same error (status, type, code), its message saying
 * what was stored before the failure (those files are indexed at their new version; re-running the ingest is safe).
 */
function partialFailure(error: unknown, report: IngestReport): unknown {
  if (!report.files.length) return error;
  const names = report.files.map((f) => f.source);
  const listed = names.slice(0, 20).join(", ") + (names.length > 20 ? `, and ${names.length - 20} more` : "");
  const done =
    `${names.length} file(s) (${report.chunks} chunks) were ingested before the failure: ${listed}. ` +
    "Re-run the ingest to finish; files already ingested are replaced, not duplicated.";
  if (error instanceof ProxyError) {
    return new ProxyError(error.status, error.type, error.code, `${error.message} ${done}`, {
      param: error.param,
      headers: error.headers,
      cause: error,
    });
  }
  return new Error(`${(error as Error)?.message ?? String(error)} (${done})`, { cause: error });
}

export class KnowledgeBase implements KnowledgeBaseLike {
  readonly collection: string;
  private readonly files: KbFiles;
  /**
   * Writes (upload, ingest, delete, reset) run one at a time in this process, and under the cross-process lock
   * (`lock`) across processes, so two versions of one source never interleave their upserts and leftover deletes,
   * and a directory's stale-source check never runs beside another process's upload. Retrieval does not wait.
   */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: KnowledgeBaseOptions) {
    this.collection = opts.rag.collection;
    this.files = new KbFiles(opts.kbDir);
  }

  /** The vector store (for health checks). */
  get store(): VectorStore {
    return this.opts.store;
  }

  async retrieve(
    query: string,
    opts: { topK?: number; signal?: AbortSignal } = {},
  ): Promise<RetrievedChunk[]> {
    const topK = opts.topK ?? this.opts.rag.topK;
    // A long prompt would exceed the embedding model's input; the question is usually at its end.
    const text = query.trim().slice(-MAX_QUERY_CHARS);
    if (!text || topK <= 0) return [];
    const candidates = Math.min(100, Math.max(topK * (this.opts.candidateMultiplier ?? 4), 20));
    const [embedding] = await this.opts.embed([text], opts.signal);
    const hits = await this.opts.store.query(embedding, candidates);
    if (!hits.length) return [];

    // Only candidates whose cosine similarity clears the threshold can be injected: min_score bounds what reaches a
    // prompt. Dense ranking: those candidates, closest first.
    const eligible = hits.filter((h) => 1 - h.distance >= this.opts.rag.minScore);
    if (!eligible.length) return [];
    const dense = eligible.map((h) => h.id);
    // Lexical ranking: BM25 over the eligible candidates (heading included), so an exact identifier or error code
    // that the embedding ranks lower still moves up; candidates matching no query term are not ranked.
    const scores = bm25Scores(
      text,
      eligible.map((h) => (h.heading ? `${h.heading}\n${h.text}` : h.text)),
    );
    const lexical = eligible
      .map((h, i) => ({ id: h.id, score: scores[i] }))
      .filter((x) => x.score > 0)
      .sort((a, b) => b.score - a.score)
      .map((x) => x.id);
    const byId = new Map(eligible.map((h, i) => [h.id, { hit: h, lexical: scores[i] }]));
    return reciprocalRankFusion([dense, lexical])
      .slice(0, topK)
      .map((f) => {
        const { hit, lexical: score } = byId.get(f.id)!;
        return {
          id: hit.id,
          source: hit.source,
          chunkIndex: hit.chunkIndex,
          heading: hit.heading,
          text: hit.text,
          dense: 1 - hit.distance,
          denseRank: f.ranks[0],
          lexical: score,
          lexicalRank: f.ranks[1],
          fused: f.score,
        };
      });
  }

  /**
   * Write a file under KB_DIR and index it. The content is staged beside the target and moved into place only once
   * it is indexed: an upload that fails (bad input, embedding or Chroma error) leaves no new file, and an earlier
   * version of the file as it was.
   */
  async upload(relPath: string, content: string): Promise<IngestedSource> {
    if (typeof content !== "string" || content.includes("\0") || !isWellFormed(content)) {
      throw new InvalidRequestError(
        "`content` must be text: a string without NUL characters or unpaired surrogates (\\ud800-\\udfff escapes " +
          "that do not form a pair).",
        "invalid_content",
        "content",
      );
    }
    const { source } = await this.files.lexical(relPath);
    this.requireSupported(source);
    return this.exclusive(async () => {
      const staged = await this.files.stage(relPath, content);
      try {
        const [done] = await this.ingestGroup([{ source: staged.source, text: content }]);
        await staged.commit();
        return done;
      } catch (error) {
        await staged.discard().catch((cleanup: unknown) => {
          this.opts.log.warn(
            { err: cleanup, source: staged.source },
            "knowledge base: failed upload not removed",
          );
        });
        throw error;
      }
    });
  }

  async ingest(relPath: string): Promise<IngestReport> {
    const target = await this.files.existing(relPath);
    if (!target.isDirectory) this.requireSupported(target.source);
    return this.exclusive(async () => {
      const report: IngestReport = { files: [], skipped: [], chunks: 0, removed: [] };
      let files: KbPath[] = [target];
      // Files found but not ingestible (type, size, binary, encoding, unreadable): their old chunks go.
      const unusable = new Set<string>();
      if (target.isDirectory) {
        const walked = await this.files.walk(target.absolute);
        report.skipped.push(...walked.skipped);
        files = walked.files.filter((f) => {
          if (documentKind(f.source)) return true;
          report.skipped.push({ path: f.source, reason: "unsupported file type" });
          unusable.add(f.source);
          return false;
        });
      }
      // Files are embedded and stored in groups of whole files (about GROUP_CHARS characters): Chroma's cost is
      // mostly per call; measured on 200 small files, one upsert and one delete per file took 24 s, groups 5.5 s.
      let group: { source: string; text: string }[] = [];
      let groupChars = 0;
      const flush = async () => {
        for (const done of await this.ingestGroup(group)) {
          report.files.push(done);
          report.chunks += done.chunks;
        }
        group = [];
        groupChars = 0;
      };
      try {
        for (const file of files) {
          const read = await this.files.readText(file.absolute);
          if ("skip" in read) {
            if (!target.isDirectory) {
              throw new InvalidRequestError(
                `Cannot ingest ${file.source}: ${read.skip}.`,
                "unsupported_file",
                "path",
              );
            }
            report.skipped.push({ path: file.source, reason: read.skip });
            unusable.add(file.source);
            continue;
          }
          group.push({ source: file.source, text: read.text });
          groupChars += read.text.length;
          if (groupChars >= GROUP_CHARS) await flush();
        }
        if (group.length) await flush();
      } catch (error) {
        throw partialFailure(error, report);
      }
      if (target.isDirectory) report.removed = await this.removeStale(target.source, report.files, unusable);
      return report;
    });
  }

  /**
   * Removes a source's chunks, or every source's under a directory (one on disk, or a name with no source of its
   * own but sources under it: the directory may be gone). `deleted` counts chunks.
   */
  async deleteSource(relPath: string): Promise<{ source: string; deleted: number }> {
    // The file may be gone already, so only lexical checks; an existing symlink is named by its real path.
    let { source } = await this.files.lexical(relPath);
    let directory = false;
    try {
      const found = await this.files.existing(relPath);
      source = found.source;
      directory = found.isDirectory;
    } catch {
      // not on disk (or not resolvable): delete by the name given
    }
    return this.exclusive(async () => {
      let deleted = directory ? 0 : await this.opts.store.countSource(source);
      if (deleted === 0) {
        const under = [...(await this.opts.store.sources())].filter(([s]) => isUnder(s, source));
        if (under.length) {
          await this.opts.store.deleteLeftovers(under.map(([s]) => ({ source: s, keep: 0 })));
          deleted = under.reduce((sum, [, chunks]) => sum + chunks, 0);
          this.opts.log.info({ source, sources: under.length, deleted }, "knowledge base: directory deleted");
          return { source, deleted };
        }
      }
      await this.opts.store.deleteSource(source);
      this.opts.log.info({ source, deleted }, "knowledge base: source deleted");
      return { source, deleted };
    });
  }

  async stats(): Promise<KnowledgeBaseStats> {
    const [chunks, sources, builtWith] = await Promise.all([
      this.opts.store.count(),
      this.opts.store.sources(),
      this.opts.store.builtWith(),
    ]);
    return {
      collection: this.collection,
      chunks,
      sources: sources.size,
      embeddingModel: this.opts.embeddingModel,
      // The model the stored vectors come from; when it is not embeddingModel, searches and writes are refused
      // until a reset.
      builtWithEmbeddingModel: builtWith,
      chunkTokens: this.opts.rag.chunkTokens,
      chunkOverlap: this.opts.rag.chunkOverlap,
    };
  }

  async reset(): Promise<void> {
    await this.exclusive(() => this.opts.store.reset());
    this.opts.log.info({ collection: this.collection }, "knowledge base: reset");
  }

  /**
   * Delete the chunks of sources under `dir` that this ingest did not store and whose file is gone, or was found
   * but is no longer ingestible (`unusable`, each reported in `skipped`). A source kept out of the walk but still
   * on disk (uploaded into a hidden or dependency/build folder, which a directory ingest does not enter) stays
   * indexed, as upload indexed it. Each file is checked right before the delete, so a file that appeared meanwhile
   * is not dropped.
   */
  private async removeStale(
    dir: string,
    stored: readonly IngestedSource[],
    unusable: ReadonlySet<string>,
  ): Promise<string[]> {
    const ingested = new Set(stored.map((f) => f.source));
    const indexed = await this.opts.store.sources();
    const removed: string[] = [];
    for (const source of [...indexed.keys()].sort()) {
      if (!isUnder(source, dir) || ingested.has(source)) continue;
      if (unusable.has(source) || !(await this.files.isFile(source))) removed.push(source);
    }
    if (removed.length) {
      await this.opts.store.deleteLeftovers(removed.map((source) => ({ source, keep: 0 })));
      this.opts.log.info({ removed: removed.length }, "knowledge base: stale sources deleted");
    }
    return removed;
  }

  private requireSupported(source: string): void {
    if (!documentKind(source)) {
      throw new InvalidRequestError(
        `Unsupported file type: ${source}. Supported: ${SUPPORTED_EXTENSIONS.join(" ")} (and Dockerfile, Makefile).`,
        "unsupported_file_type",
        "path",
      );
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const { lock } = this.opts;
    const locked = lock ? () => lock(this.collection, fn) : fn;
    const run = this.writes.then(locked, locked);
    this.writes = run.catch(() => undefined);
    return run;
  }

  /**
   * Chunk, embed (batched across files) and store whole sources, replacing their previous chunks: the new chunks
   * overwrite the old ones by id, then each source's leftovers (indexes past its new count) are deleted.
   */
  private async ingestGroup(docs: { source: string; text: string }[]): Promise<IngestedSource[]> {
    const pending: ChunkRecord[] = [];
    const results: IngestedSource[] = [];
    for (const doc of docs) {
      const chunks = chunkDocument(doc.text, documentKind(doc.source) ?? "text", {
        chunkTokens: this.opts.rag.chunkTokens,
        overlapTokens: this.opts.rag.chunkOverlap,
      });
      results.push({ source: doc.source, chunks: chunks.length });
      for (const c of chunks) {
        pending.push({
          id: chunkId(doc.source, c.index),
          text: c.text,
          embedding: [],
          source: doc.source,
          chunkIndex: c.index,
          heading: c.heading,
        });
      }
    }
    const batch = this.opts.embedBatchSize ?? 64;
    for (let i = 0; i < pending.length; i += batch) {
      const slice = pending.slice(i, i + batch);
      const embeddings = await this.opts.embed(slice.map((r) => r.text));
      if (embeddings.length !== slice.length) {
        throw new Error(
          `embedding deployment returned ${embeddings.length} vectors for ${slice.length} texts`,
        );
      }
      slice.forEach((r, j) => (r.embedding = embeddings[j]));
    }
    for (const call of upsertCalls(pending, await this.opts.store.maxBatchSize()))
      await this.opts.store.upsert(call);
    // Leftovers of longer previous versions (all chunks of a file that now has none).
    await this.opts.store.deleteLeftovers(results.map((r) => ({ source: r.source, keep: r.chunks })));
    for (const done of results) this.opts.log.info(done, "knowledge base: source ingested");
    return results;
  }
}
