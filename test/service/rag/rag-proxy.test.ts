/**
 * End to end through the real app: the /internal/kb API (auth, paths, 503 when off) and chat requests whose RAG
 * context reaches the fake upstream, against real PostgreSQL and a real Chroma server.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createChromaStore } from "../../../service/adapters/chroma";
import { KnowledgeBase } from "../../../service/kb";
import type { KnowledgeBaseLike } from "../../../service/stages/rag";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, type TestProxy } from "../../helpers/proxy";
import { countingProxy, startTestChroma, type TestChroma } from "../../helpers/chroma";

let chroma: TestChroma;
let upstream: FakeUpstream;
let proxy: TestProxy;
let store: ReturnType<typeof countingProxy<ReturnType<typeof createChromaStore>>>;
let embedCalls = 0;
let kb: KnowledgeBaseLike;
const keys: Record<string, string> = {};

const RUNBOOK =
  "# Rotating the signing key\n\nTo rotate the signing key run `keyctl rotate --grace 24h` on the primary. " +
  "Old tokens stay valid during the grace period, then the previous key is destroyed.\n\n" +
  "## Rollback\n\nIf clients fail after rotation, run `keyctl rollback` within the grace period to restore the key.\n";

beforeAll(async () => {
  chroma = await startTestChroma();
  upstream = await startFakeUpstream();
  proxy = await startProxy({
    env: { CHROMA_URL: chroma.url },
    configYaml: [
      "providers:",
      `  fake: { type: openai, base_url: "${upstream.baseUrl}", timeout_ms: 2000, max_retries: 0 }`,
      "  mock: { type: mock }",
      "models:",
      "  - { name: gpt-test, provider: fake }",
      "  - { name: mock-embedding, provider: mock, kind: embedding }",
      "embedding_model: mock-embedding",
      "rag: { collection: ops, min_score: 0.1, chunk_tokens: 128, chunk_overlap: 16 }",
    ].join("\n"),
    adjust(deps, config) {
      // The knowledge base as deps.ts builds it, with the store and the embedder counted.
      store = countingProxy(createChromaStore({ url: chroma.url, collection: config.rag.collection }));
      const built = new KnowledgeBase({
        store: store.value,
        embed: (texts, signal) => {
          embedCalls++;
          return deps.providers.embed(config.embeddingModel!, texts, signal);
        },
        kbDir: config.kbDir,
        rag: config.rag,
        embeddingModel: config.embeddingModel!,
        log: deps.log,
      });
      kb = built;
      deps.kb = built;
    },
  });
  keys.rag = (await proxy.createKey({ scopes: ["chat", "rag:ops"] })).key;
  keys.ragAll = (await proxy.createKey({ scopes: ["chat", "rag:*"] })).key;
  keys.chat = (await proxy.createKey({ scopes: ["chat"] })).key;
  keys.star = (await proxy.createKey({ scopes: ["*"] })).key;
  keys.writer = (await proxy.createKey({ scopes: ["kb:write"] })).key;
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
  await chroma?.stop();
});

async function call(method: string, url: string, key: string | null, body?: unknown) {
  const res = await fetch(`${proxy.url}${url}`, {
    method,
    headers: {
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function chat(key: string, content: string, stream = false) {
  const before = upstream.requests.length;
  const res = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-test", stream, messages: [{ role: "user", content }] }),
  });
  const text = await res.text();
  expect(res.status).toBe(200);
  const sent = upstream.requests.slice(before).filter((r) => r.path.endsWith("/chat/completions"));
  expect(sent).toHaveLength(1);
  return { text, messages: sent[0].body.messages as Array<{ role: string; content: string }> };
}

const referenceBlocks = (messages: Array<{ role: string; content: string }>) =>
  messages.filter((m) => m.role === "system" && String(m.content).includes("<reference_documents>"));

describe("/internal/kb", () => {
  it("uploads with the master key or a kb:write key; other keys get 403, no key 401", async () => {
    const master = await call("POST", "/internal/kb/upload", proxy.masterKey, {
      path: "runbooks/keys.md",
      content: RUNBOOK,
    });
    expect(master.status).toBe(201);
    expect(master.body).toMatchObject({ source: "runbooks/keys.md" });
    expect(master.body.chunks).toBeGreaterThanOrEqual(2);
    expect(fs.readFileSync(path.join(proxy.config.kbDir, "runbooks/keys.md"), "utf8")).toBe(RUNBOOK);

    const writer = await call("POST", "/internal/kb/upload", keys.writer, {
      path: "notes/cache.txt",
      content:
        "The response cache keys on the team, the model and the full request body; entries expire after the TTL.",
    });
    expect(writer.status).toBe(201);
    expect(
      (await call("POST", "/internal/kb/upload", keys.chat, { path: "x.md", content: "x" })).status,
    ).toBe(403);
    const anonymous = await call("POST", "/internal/kb/upload", null, { path: "x.md", content: "x" });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.type).toBe("authentication_error");

    const stats = await call("GET", "/internal/kb/stats", keys.writer);
    expect(stats.status).toBe(200);
    expect(stats.body).toMatchObject({ collection: "ops", sources: 2, chunks: master.body.chunks + 1 });
    // A query parameter it does not take is named, not ignored.
    const unknown = await call("GET", "/internal/kb/stats?source=docs", keys.writer);
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({ code: "unknown_parameter", param: "source" });
  });

  it("rejects paths that leave KB_DIR and unsupported types with 400 in the error envelope", async () => {
    for (const p of ["../escape.md", "/etc/passwd.md", "a/../../b.md"]) {
      const res = await call("POST", "/internal/kb/upload", proxy.masterKey, {
        path: p,
        content: "x".repeat(80),
      });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({
        type: "invalid_request_error",
        code: "invalid_path",
        param: "path",
      });
    }
    const outside = fs.mkdtempSync(path.join(path.dirname(proxy.config.kbDir), "outside-"));
    fs.writeFileSync(path.join(outside, "secret.md"), `# Secret\n\n${"classified text ".repeat(10)}`);
    fs.symlinkSync(outside, path.join(proxy.config.kbDir, "out"));
    const viaLink = await call("POST", "/internal/kb/ingest", proxy.masterKey, { path: "out/secret.md" });
    expect(viaLink.status).toBe(400);
    expect(viaLink.body.error.code).toBe("invalid_path");
    const type = await call("POST", "/internal/kb/upload", proxy.masterKey, {
      path: "a.exe",
      content: "x".repeat(80),
    });
    expect(type.status).toBe(400);
    expect(type.body.error.code).toBe("unsupported_file_type");
    expect((await call("POST", "/internal/kb/upload", proxy.masterKey, { path: "a.md" })).status).toBe(400);
    expect((await call("POST", "/internal/kb/ingest", proxy.masterKey, "{not json")).status).toBe(400);
    fs.rmSync(path.join(proxy.config.kbDir, "out"));
    fs.rmSync(outside, { recursive: true });
  });

  it("search is master-only and returns dense, lexical and fused scores", async () => {
    expect((await call("POST", "/internal/kb/search", keys.writer, { query: "rotate" })).status).toBe(403);
    const res = await call("POST", "/internal/kb/search", proxy.masterKey, {
      query: "keyctl rollback",
      top_k: 2,
    });
    expect(res.status).toBe(200);
    expect(res.body.data.length).toBeGreaterThan(0);
    expect(res.body.data.length).toBeLessThanOrEqual(2);
    const top = res.body.data[0];
    expect(top.source).toBe("runbooks/keys.md");
    expect(top.heading).toBe("Rotating the signing key > Rollback");
    expect(top.scores).toEqual({
      dense: expect.any(Number),
      dense_rank: expect.toBeOneOf([expect.any(Number), null]),
      lexical: expect.any(Number),
      lexical_rank: 1,
      fused: expect.any(Number),
    });
    expect(top.scores.lexical).toBeGreaterThan(0);
  });

  it("ingests a directory, deletes a source, and reset (master only) empties the index", async () => {
    fs.mkdirSync(path.join(proxy.config.kbDir, "batch/sub"), { recursive: true });
    fs.writeFileSync(path.join(proxy.config.kbDir, "batch/a.md"), `# A\n\n${"alpha words here ".repeat(8)}`);
    fs.writeFileSync(
      path.join(proxy.config.kbDir, "batch/sub/b.py"),
      `# ${"beta words here ".repeat(8)}\nprint(1)\n`,
    );
    const ingest = await call("POST", "/internal/kb/ingest", keys.writer, { path: "batch" });
    expect(ingest.status).toBe(200);
    expect(ingest.body.files.map((f: { source: string }) => f.source)).toEqual([
      "batch/a.md",
      "batch/sub/b.py",
    ]);
    const before = (await call("GET", "/internal/kb/stats", keys.writer)).body.chunks;
    const del = await call("DELETE", "/internal/kb/source?path=batch/a.md", keys.writer);
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ source: "batch/a.md", deleted: 1 });
    expect((await call("GET", "/internal/kb/stats", keys.writer)).body.chunks).toBe(before - 1);
    expect((await call("DELETE", "/internal/kb/source?path=../x.md", keys.writer)).status).toBe(400);
    await call("DELETE", "/internal/kb/source?path=batch/sub/b.py", keys.writer);

    expect((await call("POST", "/internal/kb/reset", keys.writer)).status).toBe(403);
    // Reset, then restore the runbook for the chat tests below.
    expect((await call("POST", "/internal/kb/reset", proxy.masterKey)).body).toEqual({
      reset: true,
      collection: "ops",
    });
    expect((await call("GET", "/internal/kb/stats", proxy.masterKey)).body).toMatchObject({
      chunks: 0,
      sources: 0,
    });
    expect((await call("POST", "/internal/kb/ingest", proxy.masterKey, { path: "runbooks" })).status).toBe(
      200,
    );
  });

  it("answers 503 when the knowledge base is off", async () => {
    proxy.deps.kb = null;
    try {
      const res = await call("GET", "/internal/kb/stats", proxy.masterKey);
      expect(res.status).toBe(503);
      expect(res.body.error.message).toBe("knowledge base is off (no CHROMA_URL)");
    } finally {
      proxy.deps.kb = kb;
    }
  });
});

describe("chat with RAG", () => {
  it("a RAG-scoped key's request reaches the upstream with the labelled reference block", async () => {
    for (const key of [keys.rag, keys.ragAll]) {
      const { messages } = await chat(key, "How do I rotate the signing key?");
      const blocks = referenceBlocks(messages);
      expect(blocks).toHaveLength(1);
      expect(blocks[0].content).toContain('source="runbooks/keys.md"');
      expect(blocks[0].content).toContain("keyctl rotate --grace 24h");
      expect(blocks[0].content).toMatch(/untrusted/);
      expect(messages.at(-1)).toEqual({ role: "user", content: "How do I rotate the signing key?" });
    }
  });

  it("streaming requests get the block too", async () => {
    const { text, messages } = await chat(keys.rag, "How do I roll back the signing key?", true);
    expect(text).toContain("data: [DONE]");
    expect(referenceBlocks(messages)).toHaveLength(1);
  });

  it("keys without a RAG scope cause no Chroma query and no embedding call at all", async () => {
    const before = { store: store.total(), embed: embedCalls };
    for (const key of [keys.chat, keys.star]) {
      const { messages } = await chat(key, "How do I rotate the signing key?");
      expect(referenceBlocks(messages)).toHaveLength(0);
      expect(messages).toEqual([{ role: "user", content: "How do I rotate the signing key?" }]);
    }
    expect(store.total()).toBe(before.store);
    expect(embedCalls).toBe(before.embed);
    // A scoped request right after does query (the counter works).
    await chat(keys.rag, "How do I rotate the signing key?");
    expect(store.calls.query).toBeGreaterThan(0);
    expect(embedCalls).toBe(before.embed + 1);
  });

  it("PII in retrieved chunks is redacted irreversibly before it reaches the upstream", async () => {
    const upload = await call("POST", "/internal/kb/upload", proxy.masterKey, {
      path: "runbooks/escalation.md",
      content:
        "# Escalation for the signing key\n\nIf rotating the signing key fails, page the key custodian " +
        "at custodian.jones@example.com or call +1 415 555 0132 before touching the primary.\n",
    });
    expect(upload.status).toBe(201);
    const { messages } = await chat(keys.rag, "Who do I escalate to when rotating the signing key fails?");
    const block = referenceBlocks(messages)[0]?.content ?? "";
    expect(block).toContain('source="runbooks/escalation.md"');
    expect(block).toContain("<<REDACTED_EMAIL_ADDRESS>>");
    expect(block).toContain("<<REDACTED_PHONE_NUMBER>>");
    expect(JSON.stringify(messages)).not.toContain("custodian.jones@example.com");
    expect(JSON.stringify(messages)).not.toContain("555 0132");
  });

  it("person names in source labels (folder or file name) are redacted before they reach the upstream", async () => {
    const files = {
      "customers/Jane Doe - jane.doe@example.com.md":
        "# Renewal terms\n\nThe quarterly renewal discount for the enterprise plan is fifteen percent, " +
        "applied by the billing desk when the renewal quote is issued.\n",
      "notes/John Smith.md":
        "# Renewal call\n\nOn the renewal call the enterprise plan discount was confirmed and the quote " +
        "will be reissued by the billing desk next quarter.\n",
    };
    for (const [file, content] of Object.entries(files)) {
      expect(
        (await call("POST", "/internal/kb/upload", proxy.masterKey, { path: file, content })).status,
      ).toBe(201);
    }
    const { messages } = await chat(keys.rag, "What renewal discount does the enterprise plan quote get?");
    const block = referenceBlocks(messages)[0]?.content ?? "";
    const sources = [...block.matchAll(/source="([^"]*)"/g)].map((m) => m[1]);
    expect(sources).toEqual(
      expect.arrayContaining([
        "customers/&lt;&lt;REDACTED_PERSON&gt;&gt; - &lt;&lt;REDACTED_EMAIL_ADDRESS&gt;&gt;",
        "notes/&lt;&lt;REDACTED_PERSON&gt;&gt;.md",
      ]),
    );
    const sent = JSON.stringify(messages);
    for (const name of ["Jane", "John", "Doe", "Smith", "jane.doe@example.com"])
      expect(sent).not.toContain(name);
  });

  it("with Chroma down, a RAG-scoped chat still succeeds, without context", async () => {
    await chroma.server.stop();
    const { messages } = await chat(keys.rag, "How do I rotate the signing key?");
    expect(referenceBlocks(messages)).toHaveLength(0);
    const stats = await call("GET", "/internal/kb/stats", proxy.masterKey);
    expect(stats.status).toBe(503);
    expect(stats.body.error.code).toBe("kb_unavailable");
  });
});
