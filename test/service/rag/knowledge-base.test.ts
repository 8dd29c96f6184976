/**
 * The knowledge base against a real Chroma server, with embeddings from the built-in mock provider through the
 * proxy's own provider registry (no network).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import pino from "pino";
import { loadConfig, type Config } from "../../../service/config";
import { createProviderRegistry, type ProviderRegistry } from "../../../service/providers/registry";
import { createChromaStore, type VectorStore } from "../../../service/adapters/chroma";
import { InvalidRequestError, type ProxyError } from "../../../service/errors";
import { KnowledgeBase, createKnowledgeBaseFromConfig } from "../../../service/kb";
import { createPiiEngine } from "../../../service/lib/pii";
import { paragraph, startTestChroma, type TestChroma } from "../../helpers/chroma";

const log = pino({ level: "silent" });

let chroma: TestChroma;
let config: Config;
let providers: ProviderRegistry;
let kbDir: string;
let outside: string;
let store: VectorStore;
let kb: KnowledgeBase;
let n = 0;

beforeAll(async () => {
  chroma = await startTestChroma();
  kbDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-kb-"));
  outside = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-outside-"));
  fs.writeFileSync(path.join(outside, "secret.md"), `# Secret\n\n${paragraph("secret")}\n`);
});

afterAll(async () => {
  await providers?.close();
  await chroma?.stop();
  fs.rmSync(kbDir, { recursive: true, force: true });
  fs.rmSync(outside, { recursive: true, force: true });
});

beforeEach(async () => {
  // A fresh collection and folder per test.
  fs.rmSync(kbDir, { recursive: true, force: true });
  fs.mkdirSync(kbDir);
  const env = { CHROMA_URL: chroma.url, KB_DIR: kbDir, LOG_LEVEL: "silent" };
  config = loadConfig({ env });
  config = { ...config, rag: { ...config.rag, collection: `test${++n}`, chunkTokens: 64, chunkOverlap: 8 } };
  providers ??= createProviderRegistry(config);
  store = createChromaStore({ url: chroma.url, collection: config.rag.collection });
  kb = new KnowledgeBase({
    store,
    embed: (texts, signal) => providers.embed(config.embeddingModel!, texts, signal),
    kbDir,
    rag: config.rag,
    embeddingModel: config.embeddingModel!,
    log,
  });
});

async function expect400(p: Promise<unknown>, code?: string) {
  const error = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(InvalidRequestError);
  expect((error as InvalidRequestError).status).toBe(400);
  if (code) expect((error as InvalidRequestError).code).toBe(code);
}

describe("factory", () => {
  it("returns null (RAG off) without CHROMA_URL, a knowledge base with it", () => {
    const lines: string[] = [];
    const capture = pino({ level: "info" }, { write: (l: string) => lines.push(l) });
    expect(
      createKnowledgeBaseFromConfig(loadConfig({ env: { KB_DIR: kbDir } }), providers, capture),
    ).toBeNull();
    expect(lines.join("")).toContain("RAG off: no CHROMA_URL");
    const noEmbedding = loadConfig({
      env: { CHROMA_URL: chroma.url, KB_DIR: kbDir },
      fileText: "providers: { mock: { type: mock } }\nmodels: [{ name: chat, provider: mock }]",
    });
    expect(createKnowledgeBaseFromConfig(noEmbedding, providers, capture)).toBeNull();
    expect(lines.join("")).toContain("RAG off: no embedding deployment");
    const made = createKnowledgeBaseFromConfig(config, providers, log);
    expect(made).toBeInstanceOf(KnowledgeBase);
    expect(made!.collection).toBe(config.rag.collection);
  });
});

describe("KB_DIR that cannot be used", () => {
  it("a file as KB_DIR stops the start naming KB_DIR; a folder that cannot be created is a 503 naming it", async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "llmp-kbfile-")), "not-a-folder");
    fs.writeFileSync(file, "x");
    const onFile = loadConfig({ env: { CHROMA_URL: chroma.url, KB_DIR: file, LOG_LEVEL: "silent" } });
    expect(() => createKnowledgeBaseFromConfig(onFile, providers, log)).toThrow(
      /^env KB_DIR: .*not-a-folder is not a folder/,
    );
    // Below a file: mkdir fails (ENOTDIR) at the first upload; the upload is a 503, not a bare 500.
    const below = new KnowledgeBase({
      store,
      embed: (texts, signal) => providers.embed(config.embeddingModel!, texts, signal),
      kbDir: path.join(file, "kb"),
      rag: config.rag,
      embeddingModel: config.embeddingModel!,
      log,
    });
    const error = (await below
      .upload("a.md", `# A\n\n${paragraph("a")}\n`)
      .catch((e: unknown) => e)) as ProxyError;
    expect(error.status).toBe(503);
    expect(error.code).toBe("kb_dir_unavailable");
    expect(error.message).toContain("KB_DIR");
  });
});

describe("factory with PII on", () => {
  it("redacts what goes to the embedding model (ingested chunks, search queries) and keeps the raw text in Chroma", async () => {
    const engine = createPiiEngine({ enabled: true, names: "gazetteer" });
    const sent: string[] = [];
    const recording: Pick<ProviderRegistry, "embed"> = {
      embed: (model, texts, signal) => {
        sent.push(...texts);
        return providers.embed(model, texts, signal);
      },
    };
    const made = createKnowledgeBaseFromConfig(config, recording, log, {
      redact: (text) => engine.newSession().redact(text),
    })!;
    const md =
      "# Escalations\n\nThe refund escalation contact is Sarah Connor (sarah.connor@example.com, " +
      "+1 415-555-2671); her card on file is 4111 1111 1111 1111 for the refunds team.\n";
    await made.upload("customers/escalations.md", md);
    await made.retrieve("mail sarah.connor@example.com about refunds", { topK: 3 });
    expect(sent.length).toBeGreaterThanOrEqual(2);
    const all = sent.join("\n");
    for (const value of ["sarah.connor@example.com", "Sarah Connor", "415-555-2671", "4111 1111 1111 1111"])
      expect(all, value).not.toContain(value);
    expect(all).toContain("<<REDACTED_EMAIL_ADDRESS>>");
    // Chroma keeps the text as written (retrieval redacts what reaches a chat provider, see rag-stage tests).
    const hits = await made.retrieve("who is the refund escalation contact for the refunds team", {
      topK: 3,
    });
    expect(hits.map((h) => h.text).join("\n")).toContain("sarah.connor@example.com");
  });
});

describe("ingestion", () => {
  it("upload writes the file under KB_DIR and indexes its chunks with source, index and heading", async () => {
    const md = `# Cache\n\n${paragraph("cache")}\n\n## Redis\n\n${paragraph("redis")}\n`;
    const done = await kb.upload("docs/cache.md", md);
    expect(done.source).toBe("docs/cache.md");
    expect(done.chunks).toBeGreaterThanOrEqual(2);
    expect(fs.readFileSync(path.join(kbDir, "docs/cache.md"), "utf8")).toBe(md);
    expect(await store.count()).toBe(done.chunks);
    const stats = await kb.stats();
    expect(stats).toMatchObject({
      chunks: done.chunks,
      sources: 1,
      embeddingModel: "mock-embedding",
      chunkTokens: 64,
    });
    const hits = await kb.retrieve("redis subsystem configured", { topK: 10 });
    expect(hits.some((h) => h.source === "docs/cache.md" && h.heading === "Cache > Redis")).toBe(true);
  });

  it("re-ingesting a source replaces its chunks: same count, new text, no duplicates", async () => {
    const first = await kb.upload("a.md", `# A\n\n${paragraph("alpha", 6)}\n`);
    await kb.upload("b.txt", paragraph("beta", 4));
    const total = await store.count();
    const again = await kb.upload("a.md", `# A\n\n${paragraph("alpha", 6)}\n`);
    expect(again.chunks).toBe(first.chunks);
    expect(await store.count()).toBe(total);
    // A shorter new version: leftovers of the old one are gone.
    const shorter = await kb.upload("a.md", `# A\n\n${paragraph("gamma", 2)}\n`);
    expect(shorter.chunks).toBeLessThan(first.chunks);
    expect(await store.countSource("a.md")).toBe(shorter.chunks);
    const hits = await kb.retrieve("alpha subsystem", { topK: 20 });
    expect(hits.filter((h) => h.source === "a.md").every((h) => !h.text.includes("alpha"))).toBe(true);
    // Ingesting the same file through /ingest also replaces in place.
    await kb.ingest("a.md");
    expect(await store.countSource("a.md")).toBe(shorter.chunks);
  });

  it("ingests a directory recursively, skipping unsupported, hidden, binary and outside-pointing entries", async () => {
    fs.mkdirSync(path.join(kbDir, "repo/src/deep"), { recursive: true });
    fs.mkdirSync(path.join(kbDir, "repo/.git"));
    fs.mkdirSync(path.join(kbDir, "repo/node_modules/x"), { recursive: true });
    fs.writeFileSync(path.join(kbDir, "repo/README.md"), `# Repo\n\n${paragraph("readme")}\n`);
    fs.writeFileSync(
      path.join(kbDir, "repo/src/main.py"),
      `def main():\n    # ${paragraph("python")}\n    return 1\n`,
    );
    fs.writeFileSync(path.join(kbDir, "repo/src/deep/util.go"), `package util\n// ${paragraph("golang")}\n`);
    fs.writeFileSync(path.join(kbDir, "repo/logo.png"), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]));
    fs.writeFileSync(path.join(kbDir, "repo/data.txt"), Buffer.from([0x41, 0, 0x42]));
    fs.writeFileSync(path.join(kbDir, "repo/.git/config.md"), `# Hidden\n\n${paragraph("hidden")}\n`);
    fs.writeFileSync(path.join(kbDir, "repo/node_modules/x/index.js"), `// ${paragraph("dependency")}\n`);
    fs.symlinkSync(outside, path.join(kbDir, "repo/escape"));
    const report = await kb.ingest("repo");
    expect(report.files.map((f) => f.source).sort()).toEqual([
      "repo/README.md",
      "repo/src/deep/util.go",
      "repo/src/main.py",
    ]);
    expect(report.chunks).toBe(report.files.reduce((s, f) => s + f.chunks, 0));
    expect(report.skipped).toEqual(
      expect.arrayContaining([
        { path: "repo/logo.png", reason: "unsupported file type" },
        { path: "repo/data.txt", reason: "binary file" },
        { path: "repo/escape", reason: "symlink resolves outside KB_DIR" },
      ]),
    );
    const sources = await store.sources();
    expect([...sources.keys()].sort()).toEqual([
      "repo/README.md",
      "repo/src/deep/util.go",
      "repo/src/main.py",
    ]);
  });

  it("re-ingesting a directory replaces every file's chunks, including files that shrank to nothing", async () => {
    fs.mkdirSync(path.join(kbDir, "set"));
    fs.writeFileSync(path.join(kbDir, "set/a.md"), `# A\n\n${paragraph("alpha", 8)}\n`);
    fs.writeFileSync(path.join(kbDir, "set/b.txt"), paragraph("beta", 8));
    fs.writeFileSync(path.join(kbDir, "set/c.txt"), paragraph("gamma", 3));
    const first = await kb.ingest("set");
    expect(first.files.every((f) => f.chunks >= 1)).toBe(true);
    expect(await store.count()).toBe(first.chunks);
    fs.writeFileSync(path.join(kbDir, "set/a.md"), `# A\n\n${paragraph("delta", 2)}\n`);
    fs.writeFileSync(path.join(kbDir, "set/b.txt"), paragraph("epsilon", 2));
    fs.writeFileSync(path.join(kbDir, "set/c.txt"), "tiny");
    const second = await kb.ingest("set");
    expect(second.files).toEqual([
      { source: "set/a.md", chunks: expect.any(Number) },
      { source: "set/b.txt", chunks: expect.any(Number) },
      { source: "set/c.txt", chunks: 0 },
    ]);
    expect(second.chunks).toBeLessThan(first.chunks);
    expect(await store.count()).toBe(second.chunks);
    for (const f of second.files) expect(await store.countSource(f.source)).toBe(f.chunks);
    expect(second.removed).toEqual([]);
  });

  it("re-ingesting a directory drops the sources of files removed from it (and only under it)", async () => {
    fs.mkdirSync(path.join(kbDir, "docs/old"), { recursive: true });
    fs.writeFileSync(path.join(kbDir, "docs/keep.md"), `# Keep\n\n${paragraph("keep", 4)}\n`);
    fs.writeFileSync(path.join(kbDir, "docs/old/gone.md"), `# Gone\n\n${paragraph("confidential", 4)}\n`);
    fs.writeFileSync(path.join(kbDir, "docsfile.md"), `# Beside\n\n${paragraph("beside", 4)}\n`);
    await kb.ingest("docs");
    await kb.ingest("docsfile.md");
    fs.rmSync(path.join(kbDir, "docs/old"), { recursive: true });
    const again = await kb.ingest("docs");
    expect(again.removed).toEqual(["docs/old/gone.md"]);
    expect([...(await store.sources()).keys()].sort()).toEqual(["docs/keep.md", "docsfile.md"]);
    const hits = await kb.retrieve("confidential subsystem configured", { topK: 10 });
    expect(hits.some((h) => h.source === "docs/old/gone.md")).toBe(false);
  });

  it("rejects unsupported file types with 400", async () => {
    await expect400(kb.upload("image.png", "not really"), "unsupported_file_type");
    fs.writeFileSync(path.join(kbDir, "x.exe"), "MZ");
    await expect400(kb.ingest("x.exe"), "unsupported_file_type");
    expect(await store.count()).toBe(0);
  });
});

describe("path confinement", () => {
  it("rejects `..` segments, absolute paths outside KB_DIR and symlinks that resolve outside, with 400", async () => {
    await expect400(kb.upload("../evil.md", paragraph("evil")), "invalid_path");
    await expect400(kb.upload("docs/../../evil.md", paragraph("evil")), "invalid_path");
    await expect400(kb.upload(path.join(outside, "evil.md"), paragraph("evil")), "invalid_path");
    await expect400(kb.ingest("../"), "invalid_path");
    await expect400(kb.ingest(outside), "invalid_path");
    await expect400(kb.ingest(path.join(outside, "secret.md")), "invalid_path");
    await expect400(kb.deleteSource("../x.md"), "invalid_path");
    expect(fs.existsSync(path.join(path.dirname(kbDir), "evil.md"))).toBe(false);
    expect(fs.readdirSync(outside)).toEqual(["secret.md"]);

    // Symlinks out: a linked file, a linked directory (ingest and write through it), a link as upload target.
    fs.symlinkSync(path.join(outside, "secret.md"), path.join(kbDir, "link.md"));
    fs.symlinkSync(outside, path.join(kbDir, "linkdir"));
    await expect400(kb.ingest("link.md"), "invalid_path");
    await expect400(kb.ingest("linkdir"), "invalid_path");
    await expect400(kb.ingest("linkdir/secret.md"), "invalid_path");
    await expect400(kb.upload("linkdir/new.md", paragraph("evil")), "invalid_path");
    await expect400(kb.upload("linkdir/sub/new.md", paragraph("evil")), "invalid_path");
    await expect400(kb.upload("link.md", paragraph("overwrite")), "invalid_path");
    expect(fs.readdirSync(outside)).toEqual(["secret.md"]);
    expect(fs.readFileSync(path.join(outside, "secret.md"), "utf8")).toContain("secret subsystem");
    expect(await store.count()).toBe(0);
  });

  it("accepts an absolute path inside KB_DIR and a symlink that stays inside (indexed by its real path)", async () => {
    fs.mkdirSync(path.join(kbDir, "real"));
    fs.writeFileSync(path.join(kbDir, "real/doc.md"), `# Doc\n\n${paragraph("inside")}\n`);
    fs.symlinkSync(path.join(kbDir, "real"), path.join(kbDir, "alias"));
    const viaAbsolute = await kb.ingest(path.join(kbDir, "real/doc.md"));
    expect(viaAbsolute.files.map((f) => f.source)).toEqual(["real/doc.md"]);
    const viaAlias = await kb.ingest("alias/doc.md");
    expect(viaAlias.files.map((f) => f.source)).toEqual(["real/doc.md"]);
    expect(await store.countSource("real/doc.md")).toBe(viaAbsolute.chunks);
    expect(await store.count()).toBe(viaAbsolute.chunks);
  });
});

describe("delete, reset, search", () => {
  it("deletes one source's chunks and leaves the others", async () => {
    const a = await kb.upload("a.md", `# A\n\n${paragraph("alpha", 4)}\n`);
    const b = await kb.upload("b.md", `# B\n\n${paragraph("beta", 4)}\n`);
    expect(await kb.deleteSource("a.md")).toEqual({ source: "a.md", deleted: a.chunks });
    expect(await store.count()).toBe(b.chunks);
    expect([...(await store.sources()).keys()]).toEqual(["b.md"]);
    // The file stays; deleting an unknown source deletes nothing.
    expect(fs.existsSync(path.join(kbDir, "a.md"))).toBe(true);
    expect(await kb.deleteSource("nope.md")).toEqual({ source: "nope.md", deleted: 0 });
  });

  it("deleting a directory deletes the sources under it, on disk or already gone", async () => {
    const a = await kb.upload("team/a.md", `# A\n\n${paragraph("alpha", 4)}\n`);
    const b = await kb.upload("team/sub/b.md", `# B\n\n${paragraph("beta", 4)}\n`);
    const c = await kb.upload("teammate.md", `# C\n\n${paragraph("gamma", 4)}\n`);
    expect(await kb.deleteSource("team")).toEqual({ source: "team", deleted: a.chunks + b.chunks });
    expect([...(await store.sources()).keys()]).toEqual(["teammate.md"]);
    expect(await store.count()).toBe(c.chunks);
    // A directory that is gone from disk: its name still reaches the sources under it.
    const d = await kb.upload("gone/d.md", `# D\n\n${paragraph("delta", 4)}\n`);
    fs.rmSync(path.join(kbDir, "gone"), { recursive: true });
    expect(await kb.deleteSource("gone")).toEqual({ source: "gone", deleted: d.chunks });
    expect([...(await store.sources()).keys()]).toEqual(["teammate.md"]);
  });

  it("reset empties the collection, which keeps working afterwards (also through a second store)", async () => {
    await kb.upload("a.md", `# A\n\n${paragraph("alpha", 4)}\n`);
    const other = createChromaStore({ url: chroma.url, collection: config.rag.collection });
    expect(await other.count()).toBeGreaterThan(0); // another replica's handle on the same collection
    await kb.reset();
    expect(await store.count()).toBe(0);
    expect((await kb.stats()).sources).toBe(0);
    // The other handle points at the deleted collection; it finds the new one by name.
    expect(await other.count()).toBe(0);
    const again = await kb.upload("a.md", `# A\n\n${paragraph("alpha", 4)}\n`);
    expect(await other.count()).toBe(again.chunks);
  });

  it("a collection built with another embedding model refuses writes and searches (409) until reset; stats say so", async () => {
    const collection = config.rag.collection;
    const first = createChromaStore({ url: chroma.url, collection, embeddingModel: "mock-embedding" });
    const kbFirst = new KnowledgeBase({
      store: first,
      embed: (texts, signal) => providers.embed(config.embeddingModel!, texts, signal),
      kbDir,
      rag: config.rag,
      embeddingModel: "mock-embedding",
      log,
    });
    await kbFirst.upload("a.md", `# A\n\n${paragraph("alpha", 4)}\n`);
    expect(await first.builtWith()).toBe("mock-embedding");
    // The proxy restarted with another embedding deployment (8-dimensional vectors here).
    const switched = createChromaStore({ url: chroma.url, collection, embeddingModel: "other-embedding" });
    const kbSwitched = new KnowledgeBase({
      store: switched,
      embed: async (texts) => texts.map(() => Array.from({ length: 8 }, (_, i) => i + 1)),
      kbDir,
      rag: config.rag,
      embeddingModel: "other-embedding",
      log,
    });
    const stats = await kbSwitched.stats();
    expect(stats).toMatchObject({
      embeddingModel: "other-embedding",
      builtWithEmbeddingModel: "mock-embedding",
    });
    for (const attempt of [
      kbSwitched.retrieve("alpha", { topK: 5 }),
      kbSwitched.upload("b.md", `# B\n\n${paragraph("beta", 4)}\n`),
    ]) {
      const error = await attempt.then(
        () => null,
        (e: unknown) => e as ProxyError,
      );
      expect(error).toMatchObject({ status: 409, code: "kb_embedding_model_mismatch" });
      expect(error!.message).toMatch(/mock-embedding.*other-embedding.*reset/s);
    }
    // The stored vectors are untouched; a reset starts the collection over with the new model.
    expect(await first.count()).toBeGreaterThan(0);
    await kbSwitched.reset();
    expect(await switched.builtWith()).toBe("other-embedding");
    expect((await kbSwitched.upload("b.md", `# B\n\n${paragraph("beta", 4)}\n`)).chunks).toBeGreaterThan(0);
    expect((await kbSwitched.retrieve("beta", { topK: 5 })).length).toBeGreaterThan(0);
  });

  it("search returns chunks with dense, lexical and fused scores; exact terms win through BM25", async () => {
    await kb.upload(
      "limits.md",
      `# Limits\n\n${paragraph("ratelimit", 3)} Error code E7781 means the token budget ran out.\n`,
    );
    await kb.upload("cache.md", `# Cache\n\n${paragraph("cache", 3)}\n`);
    await kb.upload("pii.md", `# PII\n\n${paragraph("privacy", 3)}\n`);
    // (Worded to clear min_score: only chunks similar enough are retrieved, BM25 then ranks the exact term first.)
    const hits = await kb.retrieve("what does error code E7781 mean: did the token budget run out?", {
      topK: 3,
    });
    expect(hits.length).toBeGreaterThan(0);
    expect(hits.length).toBeLessThanOrEqual(3);
    const top = hits[0];
    expect(top.source).toBe("limits.md");
    expect(top.lexical).toBeGreaterThan(0);
    expect(top.lexicalRank).toBe(1);
    expect(typeof top.dense).toBe("number");
    expect(top.dense).toBeGreaterThanOrEqual(-1);
    expect(top.dense).toBeLessThanOrEqual(1);
    expect(top.fused).toBeGreaterThan(0);
    for (const h of hits) {
      const expected =
        (h.denseRank ? 1 / (60 + h.denseRank) : 0) + (h.lexicalRank ? 1 / (60 + h.lexicalRank) : 0);
      expect(h.fused).toBeCloseTo(expected, 12);
      if (h.denseRank !== null) expect(h.dense).toBeGreaterThanOrEqual(config.rag.minScore);
    }
    // Fused order is descending.
    for (let i = 1; i < hits.length; i++) expect(hits[i - 1].fused).toBeGreaterThanOrEqual(hits[i].fused);
  });

  it("applies the similarity threshold: below min_score nothing is retrieved, even an exact lexical match", async () => {
    await kb.upload("cache.md", `# Cache\n\n${paragraph("cache", 3)}\n`);
    const strict = new KnowledgeBase({
      store,
      embed: (texts) => providers.embed(config.embeddingModel!, texts),
      kbDir,
      rag: { ...config.rag, minScore: 1 },
      embeddingModel: config.embeddingModel!,
      log,
    });
    expect(await strict.retrieve("zzz unrelated qqq")).toEqual([]);
    // BM25 matches these words, but no chunk is similar enough: min_score bounds what can be injected.
    expect(await strict.retrieve("cache subsystem")).toEqual([]);
    // With the threshold met, every chunk returned cleared it, and BM25 still ranks among them.
    const loose = await kb.retrieve("cache subsystem", { topK: 10 });
    expect(loose.length).toBeGreaterThan(0);
    for (const h of loose) {
      expect(h.dense).toBeGreaterThanOrEqual(config.rag.minScore);
      expect(h.denseRank).not.toBeNull();
    }
    expect(loose.some((h) => h.lexicalRank !== null)).toBe(true);
  });

  it("an empty collection or empty query retrieves nothing", async () => {
    expect(await kb.retrieve("anything")).toEqual([]);
    expect(await kb.retrieve("   ")).toEqual([]);
  });
});
