/**
 * Knowledge-base uploads that failed with a 500 and could leave a file behind: a path the file system refuses
 * (ENAMETOOLONG), content or paths that are not well-formed Unicode (Chroma rejects the unpaired surrogate after the
 * file was written), and any upload whose indexing fails. Through the real app, against real PostgreSQL and Chroma;
 * the embedder and the store are the real ones, wrapped so a test can make them fail.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createChromaStore, type VectorStore } from "../../../service/adapters/chroma";
import { KnowledgeBase } from "../../../service/kb";
import { upsertCalls } from "../../../service/kb/knowledge-base";
import { startProxy, type TestProxy } from "../../helpers/proxy";
import { startTestChroma, type TestChroma } from "../../helpers/chroma";

let chroma: TestChroma;
let proxy: TestProxy;
let store: VectorStore;
let kbDir: string;
/** Set by a test to make the next embedding call or upsert fail; `upsertsLeft`: upserts that succeed before they fail. */
const failures = { embed: false, upsert: false, upsertsLeft: Infinity };

beforeAll(async () => {
  chroma = await startTestChroma();
  proxy = await startProxy({
    env: { CHROMA_URL: chroma.url },
    configYaml: [
      "providers:",
      "  mock: { type: mock }",
      "models:",
      "  - { name: mock-embedding, provider: mock, kind: embedding }",
      "embedding_model: mock-embedding",
      "rag: { collection: input, chunk_tokens: 64, chunk_overlap: 8 }",
    ].join("\n"),
    adjust(deps, config) {
      const real = createChromaStore({ url: chroma.url, collection: config.rag.collection });
      store = real;
      const failing: VectorStore = new Proxy(real, {
        get(target, prop, receiver) {
          if (prop === "upsert") {
            return async (...args: Parameters<VectorStore["upsert"]>) => {
              if (failures.upsert || failures.upsertsLeft-- <= 0)
                throw new Error("chroma: upsert failed (test)");
              return real.upsert(...args);
            };
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      deps.kb = new KnowledgeBase({
        store: failing,
        embed: (texts, signal) => {
          if (failures.embed) return Promise.reject(new Error("embedding deployment unreachable (test)"));
          return deps.providers.embed(config.embeddingModel!, texts, signal);
        },
        kbDir: config.kbDir,
        rag: config.rag,
        embeddingModel: config.embeddingModel!,
        log: deps.log,
      });
    },
  });
  kbDir = proxy.config.kbDir;
});

afterAll(async () => {
  await proxy?.close();
  await chroma?.stop();
});

beforeEach(async () => {
  failures.embed = false;
  failures.upsert = false;
  failures.upsertsLeft = Infinity;
  await store.reset();
  fs.rmSync(kbDir, { recursive: true, force: true });
  fs.mkdirSync(kbDir, { recursive: true });
});

async function upload(filePath: string, content: string) {
  const res = await fetch(`${proxy.url}/internal/kb/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${proxy.masterKey}`, "content-type": "application/json" },
    body: JSON.stringify({ path: filePath, content }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Every entry under KB_DIR (hidden ones included), relative, sorted. */
function tree(dir = kbDir): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).map(String).sort();
}

async function auditedUploads(): Promise<number> {
  const { rows } = await proxy.pool.query(
    "SELECT count(*)::int AS n FROM audit_events WHERE action = 'kb.uploaded'",
  );
  return rows[0].n as number;
}

/** The state a rejected upload must leave as it was: files, chunks, audit events. */
async function snapshot() {
  const files = Object.fromEntries(
    tree()
      .filter((p) => fs.statSync(path.join(kbDir, p)).isFile())
      .map((p) => [p, fs.readFileSync(path.join(kbDir, p), "utf8")]),
  );
  return { tree: tree(), files, chunks: await store.count(), uploads: await auditedUploads() };
}

function expect400(res: { status: number; body: any }, code: string, param: string, label = "") {
  expect(res.status, `${label} ${JSON.stringify(res.body)}`).toBe(400);
  expect(res.body.error, label).toMatchObject({ type: "invalid_request_error", code, param });
}

const DOC = `# Kept\n\n${"The kept document explains the retention policy of the cache in some detail. ".repeat(12)}\n`;

describe("upload: path length", () => {
  it("a path segment over 255 bytes → 400 invalid_path before anything is written", async () => {
    const before = await snapshot();
    for (const p of [
      `${"a".repeat(300)}.md`,
      `${"a".repeat(253)}.md`, // 256 bytes
      `${"é".repeat(127)}.md`, // 130 characters, 257 bytes
      `${"d".repeat(300)}/x.md`,
      `docs/${"d".repeat(256)}/x.md`,
    ]) {
      const res = await upload(p, DOC);
      expect400(res, "invalid_path", "path", p.slice(0, 20));
      expect(res.body.error.message).toContain("255 bytes");
    }
    expect(await snapshot()).toEqual(before);
  });

  it("a whole path over 1024 bytes → 400 invalid_path; no folder is created", async () => {
    const before = await snapshot();
    for (const p of [
      `${Array(30).fill("s".repeat(200)).join("/")}/x.md`, // past PATH_MAX (ENAMETOOLONG from mkdir)
      `${Array(6).fill("s".repeat(180)).join("/")}/x.md`, // 1,090 bytes
    ]) {
      const res = await upload(p, DOC);
      expect400(res, "invalid_path", "path", `${p.length} bytes`);
      expect(res.body.error.message).toContain("1024 bytes");
    }
    expect(await snapshot()).toEqual(before);
  });

  it("names of exactly 255 bytes and paths of exactly 1024 bytes are accepted", async () => {
    const long = `${"b".repeat(252)}.md`;
    expect((await upload(long, DOC)).status).toBe(201);
    expect(fs.readFileSync(path.join(kbDir, long), "utf8")).toBe(DOC);
    const multibyte = `${"é".repeat(126)}.md`; // 255 bytes
    expect((await upload(multibyte, DOC)).status).toBe(201);
    const exact = `${Array(4).fill("p".repeat(254)).join("/")}/x.md`; // 4 × 254 + 3 + 5 = 1024 bytes
    const res = await upload(exact, DOC);
    expect(res.status).toBe(201);
    expect(res.body.source).toBe(exact);
    expect(fs.readFileSync(path.join(kbDir, exact), "utf8")).toBe(DOC);
    const over = `${Array(4).fill("q".repeat(254)).join("/")}/xy.md`; // 1025 bytes
    expect400(await upload(over, DOC), "invalid_path", "path");
    expect(fs.existsSync(path.join(kbDir, "q".repeat(254)))).toBe(false);
  });
});

describe("upload: well-formed Unicode", () => {
  it("content with an unpaired surrogate → 400 invalid_content; no file is written, nothing is indexed", async () => {
    const before = await snapshot();
    for (const content of ["\ud800 lone high surrogate", `${DOC}\udc00`, `emoji cut in half: \ud83d`]) {
      const res = await upload("s.md", content);
      expect400(res, "invalid_content", "content", JSON.stringify(content.slice(-8)));
      expect(res.body.error.message).toMatch(/surrogate/);
    }
    expect(await snapshot()).toEqual(before);
    expect(fs.existsSync(path.join(kbDir, "s.md"))).toBe(false);
  });

  it("a rejected re-upload keeps the existing file and its chunks", async () => {
    const first = await upload("notes/s.md", DOC);
    expect(first.status).toBe(201);
    const before = await snapshot();
    const chunks = await store.countSource("notes/s.md");
    expect400(await upload("notes/s.md", "replaced \ud800"), "invalid_content", "content");
    expect(await snapshot()).toEqual(before);
    expect(fs.readFileSync(path.join(kbDir, "notes/s.md"), "utf8")).toBe(DOC);
    expect(await store.countSource("notes/s.md")).toBe(chunks);
  });

  it("a path with an unpaired surrogate → 400 invalid_path; surrogate pairs (emoji) are fine", async () => {
    const before = await snapshot();
    expect400(await upload("bad\ud800.md", DOC), "invalid_path", "path");
    expect400(await upload("dir\udfff/x.md", DOC), "invalid_path", "path");
    expect(await snapshot()).toEqual(before);
    const emoji = await upload("notes/🚀 launch.md", DOC);
    expect(emoji.status).toBe(201);
    expect(fs.readFileSync(path.join(kbDir, "notes/🚀 launch.md"), "utf8")).toBe(DOC);
  });
});

describe("search: well-formed Unicode", () => {
  it("a query with an unpaired surrogate → 400 naming it; the same query without it is searched", async () => {
    const search = async (query: string) => {
      const res = await fetch(`${proxy.url}/internal/kb/search`, {
        method: "POST",
        headers: { authorization: `Bearer ${proxy.masterKey}`, "content-type": "application/json" },
        body: JSON.stringify({ query }),
      });
      return { status: res.status, body: (await res.json()) as any };
    };
    expect400(await search("retention \ud800 policy"), "invalid_body", "query");
    expect((await search("retention 🚀 policy")).status).toBe(200);
  });
});

describe("upload: indexing fails", () => {
  for (const [what, flag] of [
    ["the embedding call", "embed"],
    ["the Chroma upsert", "upsert"],
  ] as const) {
    it(`when ${what} fails, a new file (and the folders made for it) is removed`, async () => {
      expect((await upload("kept.md", DOC)).status).toBe(201);
      const before = await snapshot();
      failures[flag] = true;
      const res = await upload("fresh/deep/new.md", DOC);
      expect(res.status).toBeGreaterThanOrEqual(500);
      expect(await snapshot()).toEqual(before);
      expect(fs.existsSync(path.join(kbDir, "fresh"))).toBe(false);
    });

    it(`when ${what} fails on a re-upload, the previous file and its chunks stay`, async () => {
      expect((await upload("docs/kept.md", DOC)).status).toBe(201);
      const before = await snapshot();
      const chunks = await store.countSource("docs/kept.md");
      failures[flag] = true;
      const res = await upload(
        "docs/kept.md",
        `# New\n\n${"A different text about something else. ".repeat(20)}`,
      );
      expect(res.status).toBeGreaterThanOrEqual(500);
      expect(await snapshot()).toEqual(before);
      expect(fs.readFileSync(path.join(kbDir, "docs/kept.md"), "utf8")).toBe(DOC);
      expect(await store.countSource("docs/kept.md")).toBe(chunks);
    });
  }

  it("once indexing works again, the upload replaces the file and leaves no temporary file", async () => {
    expect((await upload("docs/a.md", DOC)).status).toBe(201);
    failures.embed = true;
    expect(
      (await upload("docs/a.md", `# Other\n\n${"Other text about the rate limiter. ".repeat(12)}`)).status,
    ).toBeGreaterThanOrEqual(500);
    failures.embed = false;
    const next = `# Next\n\n${"The next version of the document covers eviction. ".repeat(12)}\n`;
    const res = await upload("docs/a.md", next);
    expect(res.status).toBe(201);
    expect(fs.readFileSync(path.join(kbDir, "docs/a.md"), "utf8")).toBe(next);
    expect(tree()).toEqual(["docs", "docs/a.md"]);
    expect(await store.countSource("docs/a.md")).toBe(res.body.chunks);
  });

  it("the same rules hold for the existing write guards: a directory or a file as a parent → 400, nothing left", async () => {
    expect((await upload("docs/a.md", DOC)).status).toBe(201);
    const before = await snapshot();
    expect400(await upload("docs", DOC), "unsupported_file_type", "path");
    fs.mkdirSync(path.join(kbDir, "dir.md"));
    const asDir = await upload("dir.md", DOC);
    expect400(asDir, "invalid_path", "path");
    fs.rmdirSync(path.join(kbDir, "dir.md"));
    const underFile = await upload("docs/a.md/b.md", DOC);
    expect400(underFile, "invalid_path", "path");
    expect(await snapshot()).toEqual(before);
  });
});

describe("directory ingest: a Chroma write that fails midway", () => {
  /** ~100 chunks of 64 tokens; every chunk names its revision. */
  const doc = (name: string, rev: number) =>
    `# ${name}\n\n` +
    Array.from(
      { length: 150 },
      (_, i) => `Part ${i} of ${name}. ${`rev${rev} covers cache eviction. `.repeat(4)}`,
    ).join("\n\n");
  const write = (rev: number) => {
    fs.mkdirSync(path.join(kbDir, "docs"), { recursive: true });
    for (const name of ["a", "b", "c"])
      fs.writeFileSync(path.join(kbDir, "docs", `${name}.md`), doc(name, rev));
  };
  const ingest = async () =>
    (
      await fetch(`${proxy.url}/internal/kb/ingest`, {
        method: "POST",
        headers: { authorization: `Bearer ${proxy.masterKey}`, "content-type": "application/json" },
        body: JSON.stringify({ path: "docs" }),
      })
    ).status;
  /** The revisions the stored chunks of `source` name. */
  async function revisions(source: string): Promise<Set<string>> {
    const { ChromaClient } = await import("chromadb");
    const url = new URL(chroma.url);
    const client = new ChromaClient({ host: url.hostname, port: Number(url.port) });
    const c = await client.getCollection({ name: store.name, embeddingFunction: null as never });
    const got = await c.get({ where: { source: { $eq: source } }, include: ["documents" as never] });
    return new Set(got.documents.flatMap((d) => (d ?? "").match(/rev\d/g) ?? []));
  }

  it("leaves each source whole at its old or its new version, never a mix", async () => {
    write(1);
    expect(await ingest()).toBe(200);
    const counts = await Promise.all(["a", "b", "c"].map((n) => store.countSource(`docs/${n}.md`)));
    // Three sources of ~100 chunks: 256 records a call would have cut the third source across two calls.
    expect(
      counts.every((n) => n > 85 && n < 128),
      String(counts),
    ).toBe(true);
    write(2);
    failures.upsertsLeft = 1;
    expect(await ingest()).toBeGreaterThanOrEqual(500);
    const seen = await Promise.all(["a", "b", "c"].map((n) => revisions(`docs/${n}.md`)));
    for (const revs of seen) expect(revs.size, [...revs].join()).toBe(1);
    // The first call did land (the failure hit midway, not before anything was written).
    expect(seen.map((r) => [...r][0])).toEqual(["rev2", "rev2", "rev1"]);
    failures.upsertsLeft = Infinity;
    expect(await ingest()).toBe(200);
    for (const n of ["a", "b", "c"]) expect([...(await revisions(`docs/${n}.md`))]).toEqual(["rev2"]);
  });
});

describe("upsertCalls: how a group's records are cut into Chroma calls", () => {
  const records = (sizes: Record<string, number>) =>
    Object.entries(sizes).flatMap(([source, n]) => Array.from({ length: n }, (_, i) => ({ source, i })));
  const shape = (calls: Array<Array<{ source: string }>>) =>
    calls.map((c) => [...new Set(c.map((r) => r.source))].join("+") + `:${c.length}`);

  it("packs whole sources up to 256 records a call, and never cuts a source below the server's limit", () => {
    expect(shape(upsertCalls(records({ a: 100, b: 100, c: 100 }), 5461))).toEqual(["a+b:200", "c:100"]);
    expect(shape(upsertCalls(records({ a: 10, big: 1000, b: 10 }), 5461))).toEqual([
      "a:10",
      "big:1000",
      "b:10",
    ]);
    expect(shape(upsertCalls(records({ a: 256, b: 1 }), 5461))).toEqual(["a:256", "b:1"]);
  });

  it("splits only a source over the server's limit, and packs under a limit below 256", () => {
    expect(shape(upsertCalls(records({ big: 700 }), 300))).toEqual(["big:300", "big:300", "big:100"]);
    expect(shape(upsertCalls(records({ a: 60, b: 60 }), 100))).toEqual(["a:60", "b:60"]);
    expect(upsertCalls([], 5461)).toEqual([]);
  });
});
