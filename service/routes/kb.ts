/**
 * Knowledge-base API under /internal/kb. Ingestion (upload, ingest, delete, stats) accepts the master key or a key
 * with the `kb:write` scope; search and reset need the master key.
 *
 *   POST   /internal/kb/upload   {"path": "docs/guide.md", "content": "..."}  write KB_DIR/<path>, then ingest it
 *   POST   /internal/kb/ingest   {"path": "docs"}        a file or (recursively) a directory under KB_DIR
 *   DELETE /internal/kb/source?path=docs/guide.md       remove a source's chunks from the index
 *   GET    /internal/kb/stats                           chunk and source counts
 *   POST   /internal/kb/reset                           drop every chunk (files stay)        [master key]
 *   POST   /internal/kb/search   {"query": "...", "top_k": 5}  chunks with dense, lexical and fused scores [master]
 *
 * Upload takes JSON (`content` is the file's UTF-8 text), not multipart: the knowledge base holds text files, and
 * JSON keeps the body bounded by the same reader as every other endpoint.
 *
 * Upload, ingest, delete and reset each record one audit event (kb.uploaded, kb.ingested, kb.source_deleted,
 * kb.reset) with counts, never content.
 */
import Router from "@koa/router";
import type { Middleware, Context } from "koa";
import { z } from "zod";
import type { AppDeps } from "../app";
import { InvalidRequestError, ServiceUnavailableError } from "../errors";
import { auditContextOf } from "../lib/audit";
import { readJsonBody } from "../lib/body";
import { createAuth } from "../stages/auth";
import type { AuditContext, NewAuditEvent } from "../ports";
import type { KnowledgeBaseLike } from "../stages/rag";
import { isWellFormed } from "../kb/kb-files";
import { acceptQuery } from "./admin";
import type { ProxyState } from "../state";

const uploadSchema = z.object({ path: z.string().min(1), content: z.string() }).strict();
const ingestSchema = z.object({ path: z.string().min(1) }).strict();
const searchSchema = z
  .object({
    // Sent to the embedding deployment as is: well-formed Unicode, as uploads must be.
    query: z.string().min(1).refine(isWellFormed, "must be well-formed Unicode (no unpaired surrogate)"),
    top_k: z.number().int().min(1).max(50).optional(),
  })
  .strict();

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue.path.map(String).join(".") || null;
  throw new InvalidRequestError(
    `Invalid request body: ${param ? `${param}: ` : ""}${issue.message}.`,
    "invalid_body",
    param,
  );
}

export function createKbRouter(deps: AppDeps, masterAuth: Middleware<ProxyState>): Router<ProxyState> {
  const router = new Router<ProxyState>({ prefix: "/internal/kb" });
  const writeAuth = createAuth({ keys: deps.keys, scope: "kb:write", masterKey: deps.config.masterKey });
  const limit = deps.config.server.bodyLimitBytes;

  const kbOf = (): KnowledgeBaseLike => {
    if (!deps.kb) throw new ServiceUnavailableError("knowledge base is off (no CHROMA_URL)", "kb_disabled");
    return deps.kb;
  };
  const body = (ctx: Context) => readJsonBody(ctx, limit);
  // The knowledge base lives in Chroma and KB_DIR, outside PostgreSQL's transactions, so its event is recorded once
  // the change has succeeded. If recording fails the request answers 500 rather than reporting success for an
  // unaudited change; every knowledge-base write is idempotent, so the client's retry records it.
  const audit = (ctx: Parameters<typeof auditContextOf>[0], event: Omit<NewAuditEvent, keyof AuditContext>) =>
    deps.audit.record({ ...auditContextOf(ctx), ...event });

  router.post("/upload", writeAuth, async function kbUpload(ctx) {
    const kb = kbOf();
    const input = parse(uploadSchema, await body(ctx));
    const uploaded = await kb.upload(input.path, input.content);
    await audit(ctx, {
      action: "kb.uploaded",
      targetType: "kb_source",
      targetId: uploaded.source,
      changes: {
        bytes: { before: null, after: Buffer.byteLength(input.content, "utf8") },
        chunks: { before: null, after: uploaded.chunks },
      },
    });
    ctx.status = 201;
    ctx.body = uploaded;
  });

  router.post("/ingest", writeAuth, async function kbIngest(ctx) {
    const kb = kbOf();
    const input = parse(ingestSchema, await body(ctx));
    const report = await kb.ingest(input.path);
    await audit(ctx, {
      action: "kb.ingested",
      targetType: "kb_source",
      targetId: input.path,
      changes: {
        files: { before: null, after: report.files.length },
        chunks: { before: null, after: report.chunks },
      },
    });
    ctx.body = report;
  });

  router.delete("/source", writeAuth, async function kbDeleteSource(ctx) {
    const kb = kbOf();
    const path = ctx.query.path;
    if (typeof path !== "string" || !path) {
      throw new InvalidRequestError("Query parameter `path` is required (once).", "invalid_path", "path");
    }
    const deleted = await kb.deleteSource(path);
    await audit(ctx, {
      action: "kb.source_deleted",
      targetType: "kb_source",
      targetId: deleted.source,
      changes: { chunks: { before: deleted.deleted, after: 0 } },
    });
    ctx.body = deleted;
  });

  router.get("/stats", writeAuth, acceptQuery(), async function kbStats(ctx) {
    ctx.body = await kbOf().stats();
  });

  router.post("/reset", masterAuth, async function kbReset(ctx) {
    const kb = kbOf();
    await kb.reset();
    await audit(ctx, {
      action: "kb.reset",
      targetType: "kb_collection",
      targetId: kb.collection,
      changes: {},
    });
    ctx.body = { reset: true, collection: kb.collection };
  });

  router.post("/search", masterAuth, async function kbSearch(ctx) {
    const kb = kbOf();
    const input = parse(searchSchema, await body(ctx));
    const chunks = await kb.retrieve(input.query, input.top_k ? { topK: input.top_k } : {});
    ctx.body = {
      object: "list",
      data: chunks.map((c) => ({
        id: c.id,
        source: c.source,
        chunk_index: c.chunkIndex,
        heading: c.heading,
        text: c.text,
        scores: {
          dense: c.dense,
          dense_rank: c.denseRank,
          lexical: c.lexical,
          lexical_rank: c.lexicalRank,
          fused: c.fused,
        },
      })),
    };
  });

  return router;
}
