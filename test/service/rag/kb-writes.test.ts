/**
 * Knowledge-base writes when something goes wrong around them, against a real Chroma server and a real PostgreSQL:
 * the embedding provider failing, files in folders a directory ingest does not walk, files vanishing or not UTF-8,
 * and two processes (two KnowledgeBase instances, two connection pools) writing one collection at once.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createChromaStore, type VectorStore } from "../../../service/adapters/chroma";
import { createPgKbLock, KB_LOCK_NAMESPACE } from "../../../service/adapters/pg-kb-lock";
import { loadConfig, type Config } from "../../../service/config";
import { ProxyError } from "../../../service/errors";
import { KnowledgeBase, type Embed, type KnowledgeBaseOptions } from "../../../service/kb";
import { createProviderRegistry, type ProviderRegistry } from "../../../service/providers/registry";
import { paragraph, startTestChroma, type TestChroma } from "../../helpers/chroma";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";

const log = pino({ level: "silent" });
/** A Markdown file over 64,000 characters: a directory ingest stores it (and embeds it) before reading the next. */
const bigDoc = (topic: string) => `# ${topic}\n\n${paragraph(topic, 800)}\n`;

let chroma: TestChroma;
let upstream: FakeUpstream;
let database: TestDatabase;
let pools: pg.Pool[] = [];
let mockProviders: ProviderRegistry;
let fakeProviders: ProviderRegistry;
let config: Config;
let kbDir: string;
let store: VectorStore;
let n = 0;

beforeAll(async () => {
  [chroma, upstream, database] = await Promise.all([
    startTestChroma(),
    startFakeUpstream(),
    createTestDatabase("llmp_kbw"),
  ]);
  kbDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-kbw-"));
  mockProviders = createProviderRegistry(loadConfig({ env: { KB_DIR: kbDir } }));
  fakeProviders = createProviderRegistry(
    loadConfig({
      env: { KB_DIR: kbDir },
      fileText: [
        "providers:",
        `  fake: { type: openai, base_url: "${upstream.baseUrl}", timeout_ms: 2000, max_retries: 0 }`,
        "models:",
        "  - { name: text-embedding-3-small, provider: fake, kind: embedding }",
        "embedding_model: text-embedding-3-small",
      ].join("\n"),
    }),
  );
  // Two pools: two processes, each with its own connections (and advisory-lock sessions).
  pools = [new pg.Pool({ connectionString: database.url }), new pg.Pool({ connectionString: database.url })];
});

afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await Promise.all([mockProviders?.close(), fakeProviders?.close()]);
  await Promise.all([chroma?.stop(), upstream?.close()]);
  await database?.drop();
  fs.rmSync(kbDir, { recursive: true, force: true });
});

beforeEach(() => {
  fs.rmSync(kbDir, { recursive: true, force: true });
  fs.mkdirSync(kbDir);
  const base = loadConfig({ env: { CHROMA_URL: chroma.url, KB_DIR: kbDir, LOG_LEVEL: "silent" } });
  config = {
    ...base,
    rag: { ...base.rag, collection: `writes${++n}`, chunkTokens: 256, chunkOverlap: 16 },
  };
  store = createChromaStore({ url: chroma.url, collection: config.rag.collection });
  upstream.behave({ kind: "ok" });
});

const mockEmbed: Embed = (texts, signal) => mockProviders.embed("mock-embedding", texts, signal);

function makeKb(opts: Partial<KnowledgeBaseOptions> = {}): KnowledgeBase {
  return new KnowledgeBase({
    store: createChromaStore({ url: chroma.url, collection: config.rag.collection }),
    embed: mockEmbed,
    kbDir,
    rag: config.rag,
    embeddingModel: "mock-embedding",
    log,
    embedBatchSize: 1000,
    ...opts,
  });
}

function write(rel: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(path.join(kbDir, rel)), { recursive: true });
  fs.writeFileSync(path.join(kbDir, rel), content);
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

/** Wait (without a time bound of its own: the test's timeout is the bound) until `cond` holds. */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 10));
}

function gate() {
  let release!: () => void;
  let entered!: () => void;
  const opened = new Promise<void>((r) => (release = r));
  const reached = new Promise<void>((r) => (entered = r));
  return { release, entered, opened, reached };
}

describe("embedding provider failures", () => {
  const embedVia: Embed = (texts, signal) => fakeProviders.embed("text-embedding-3-small", texts, signal);

  it("a 5xx is a 502 upstream_error and a 4xx is the provider's status and message; the upload leaves no file", async () => {
    const kb = makeKb({ embed: embedVia });
    upstream.behave((req) =>
      req.path.endsWith("/embeddings") ? { kind: "status", status: 500 } : { kind: "ok" },
    );
    const e500 = await failure(kb.upload("c.md", `# C\n\n${paragraph("charlie")}\n`));
    expect(e500).toBeInstanceOf(ProxyError);
    expect((e500 as ProxyError).status).toBe(502);
    expect((e500 as ProxyError).type).toBe("upstream_error");
    expect(fs.existsSync(path.join(kbDir, "c.md"))).toBe(false);

    upstream.behave((req) =>
      req.path.endsWith("/embeddings")
        ? {
            kind: "status",
            status: 400,
            body: {
              error: {
                message: "This model's maximum context length is 8192 tokens",
                type: "invalid_request_error",
              },
            },
          }
        : { kind: "ok" },
    );
    const e400 = await failure(kb.upload("c.md", `# C\n\n${paragraph("charlie")}\n`));
    expect(e400).toBeInstanceOf(ProxyError);
    expect((e400 as ProxyError).status).toBe(400);
    expect((e400 as ProxyError).message).toContain("maximum context length is 8192 tokens");
    expect(await store.count()).toBe(0);
  });

  it("a directory ingest failing midway names what it ingested before the failure", async () => {
    const kb = makeKb({ embed: embedVia });
    write("d/a.md", bigDoc("alpha"));
    write("d/b.md", `# Bravo\n\n${paragraph("bravo")}\n`);
    upstream.behave((req) =>
      req.path.endsWith("/embeddings") && JSON.stringify(req.body).includes("bravo")
        ? { kind: "status", status: 500 }
        : { kind: "ok" },
    );
    const error = await failure(kb.ingest("d"));
    expect(error).toBeInstanceOf(ProxyError);
    expect((error as ProxyError).status).toBe(502);
    expect((error as ProxyError).message).toMatch(
      /1 file\(s\) \(\d+ chunks\) were ingested before the failure: d\/a\.md\./,
    );
    expect([...(await store.sources()).keys()]).toEqual(["d/a.md"]);
  });
});

describe("folders a directory ingest does not walk", () => {
  it("files uploaded into hidden or dependency/build folders stay indexed; the ingest reports those folders", async () => {
    const kb = makeKb();
    const uploaded = [
      "docs/build/a.md",
      "docs/dist/b.md",
      "docs/node_modules/x/c.md",
      "docs/vendor/d.md",
      "docs/.hidden/e.md",
      "docs/.notes.md",
      "docs/keep.md",
    ];
    for (const [i, rel] of uploaded.entries())
      await kb.upload(rel, `# Doc ${i}\n\n${paragraph(`topic${i}`)}\n`);
    const report = await kb.ingest("docs");
    expect(report.files.map((f) => f.source)).toEqual(["docs/keep.md"]);
    expect(report.removed).toEqual([]);
    expect(report.skipped).toEqual(
      expect.arrayContaining([
        { path: "docs/build", reason: "dependency or build-output folder (not walked)" },
        { path: "docs/node_modules", reason: "dependency or build-output folder (not walked)" },
        { path: "docs/.hidden", reason: "hidden folder (not walked)" },
        { path: "docs/.notes.md", reason: "hidden file (not walked)" },
      ]),
    );
    expect([...(await store.sources()).keys()].sort()).toEqual([...uploaded].sort());

    // Once such a file is gone from disk, the next ingest above it drops its chunks.
    fs.rmSync(path.join(kbDir, "docs/build/a.md"));
    const again = await kb.ingest("docs");
    expect(again.removed).toEqual(["docs/build/a.md"]);
    expect((await store.sources()).has("docs/build/a.md")).toBe(false);
    expect((await store.sources()).has("docs/vendor/d.md")).toBe(true);
  });
});

describe("files that vanish or are not UTF-8", () => {
  it("a file deleted after the walk listed it is skipped; the rest of the directory is ingested", async () => {
    write("d/a.md", bigDoc("alpha"));
    write("d/b.md", `# Bravo\n\n${paragraph("bravo")}\n`);
    write("d/c.md", `# Charlie\n\n${paragraph("charlie")}\n`);
    // The first embedding call (a.md, stored before b.md is read) deletes b.md.
    const kb = makeKb({
      embed: (texts, signal) => {
        fs.rmSync(path.join(kbDir, "d/b.md"), { force: true });
        return mockEmbed(texts, signal);
      },
    });
    const report = await kb.ingest("d");
    expect(report.files.map((f) => f.source)).toEqual(["d/a.md", "d/c.md"]);
    expect(report.skipped).toContainEqual({ path: "d/b.md", reason: "file disappeared during the ingest" });
    expect([...(await store.sources()).keys()].sort()).toEqual(["d/a.md", "d/c.md"]);
  });

  it("a file that is not UTF-8 is skipped in a directory and a 400 on its own, never indexed garbled", async () => {
    const kb = makeKb();
    write("d/latin1.md", Buffer.from(`# Caf\xe9\n\n${paragraph("caf\xe9")}\n`, "latin1"));
    write("d/ok.md", `# OK\n\n${paragraph("fine")}\n`);
    const report = await kb.ingest("d");
    expect(report.files.map((f) => f.source)).toEqual(["d/ok.md"]);
    expect(report.skipped).toContainEqual({ path: "d/latin1.md", reason: "not UTF-8" });
    const single = await failure(kb.ingest("d/latin1.md"));
    expect((single as ProxyError).status).toBe(400);
    expect((single as ProxyError).message).toContain("not UTF-8");
    expect((await store.sources()).has("d/latin1.md")).toBe(false);
  });
});

describe("two processes writing one collection", () => {
  /** Whether a knowledge-base lock is being waited for in this database. */
  async function lockAwaited(): Promise<boolean> {
    const { rows } = await pools[0].query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'advisory' AND NOT granted AND classid = $1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [KB_LOCK_NAMESPACE],
    );
    return rows[0].n > 0;
  }

  /**
   * Process A runs `first` and is held inside its first embedding call; process B then runs `second` until it
   * finishes or waits for the lock; then A goes on. Returns both results.
   */
  async function interleave<A, B>(
    first: (kb: KnowledgeBase) => Promise<A>,
    second: (kb: KnowledgeBase) => Promise<B>,
  ): Promise<[A, B]> {
    const held = gate();
    let calls = 0;
    const a = makeKb({
      lock: createPgKbLock({ pool: pools[0] }),
      embed: async (texts, signal) => {
        if (calls++ === 0) {
          held.entered();
          await held.opened;
        }
        return mockEmbed(texts, signal);
      },
    });
    const b = makeKb({ lock: createPgKbLock({ pool: pools[1] }) });
    const runA = first(a);
    await held.reached;
    let bDone = false;
    const runB = second(b).finally(() => (bDone = true));
    await until(async () => bDone || (await lockAwaited()));
    held.release();
    return Promise.all([runA, runB]);
  }

  it("an ingest of a directory does not drop a file another process uploads into it meanwhile", async () => {
    write("d/a.md", `# Alpha\n\n${paragraph("alpha")}\n`);
    const [report] = await interleave(
      (kb) => kb.ingest("d"),
      (kb) => kb.upload("d/new.md", `# New\n\n${paragraph("novel")}\n`),
    );
    expect(report.removed).toEqual([]);
    expect([...(await store.sources()).keys()].sort()).toEqual(["d/a.md", "d/new.md"]);
  });

  it("an ingest of v1 and an upload of v2 of one file leave v2 whole, never a truncated v1", async () => {
    write("d/doc.md", `# Doc\n\n${paragraph("version one", 4)}\n`);
    const v2 = `# Doc\n\n${paragraph("version two", 80)}\n`;
    const [, uploaded] = await interleave(
      (kb) => kb.ingest("d/doc.md"),
      (kb) => kb.upload("d/doc.md", v2),
    );
    expect(fs.readFileSync(path.join(kbDir, "d/doc.md"), "utf8")).toBe(v2);
    expect(uploaded.chunks).toBeGreaterThan(2);
    expect(await store.countSource("d/doc.md")).toBe(uploaded.chunks);
    const hits = await makeKb().retrieve("version subsystem config", { topK: 50 });
    const texts = hits.filter((h) => h.source === "d/doc.md").map((h) => h.text);
    expect(texts.length).toBeGreaterThan(0);
    expect(texts.every((t) => !t.includes("version one"))).toBe(true);
  });
});
