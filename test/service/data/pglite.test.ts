import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterAll, expect, it } from "vitest";
import { MIGRATIONS, migrate } from "../../../service/adapters/migrations";
import { createPgKeyStore, createPgTeamStore, createPgUsageReport } from "../../../service/adapters/pg-stores";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../../service/adapters/pglite";
import { createPostgres } from "../../../service/adapters/postgres";
import { createUsageWriter } from "../../../service/adapters/usage-writer";
import { ConflictError } from "../../../service/errors";
import { generateApiKey } from "../../../service/lib/keys";
import { usageRow } from "../../helpers/usage";

const log = pino({ level: "silent" });
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-pglite-"));
let embedded: EmbeddedPostgres | undefined;

afterAll(async () => {
  await embedded?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

// One test on purpose: creating a PGlite database runs initdb in WASM (several seconds).
it("PGlite: starts under dataDir, runs the same migrations and stores, and keeps its data across a restart", async () => {
  embedded = await startEmbeddedPostgres({ dataDir, log });
  expect(embedded.poolMax).toBe(1);
  expect(embedded.url).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
  expect(fs.existsSync(path.join(dataDir, "pg", "PG_VERSION"))).toBe(true);

  let pg = createPostgres({ url: embedded.url, log, ...embedded.poolOptions });
  expect(await pg.db.ping()).toBe(true);
  expect((await migrate(pg.pool, { log })).applied).toEqual(MIGRATIONS.map((m) => m.id));
  const version = await pg.pool.query("SELECT version() AS v");
  expect(version.rows[0].v).toContain("PGlite");

  const teams = createPgTeamStore(pg.pool);
  const keys = createPgKeyStore(pg.pool);
  const team = await teams.create({ name: "embedded", limits: { requestsPerMinute: 1, tokensPerMinute: null, tokensPerDay: 0 } });
  const g = generateApiKey();
  const key = await keys.create({
    name: "k",
    teamId: team.id,
    scopes: ["chat", "rag:*"],
    expiresAt: null,
    limits: { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null },
    hash: g.hash,
    prefix: g.prefix,
  });
  // Transactions on the single connection: rotate, then the team delete conflict.
  const rotated = await keys.rotate(key.id, generateApiKey());
  expect(rotated?.rotatedFrom).toBe(key.id);
  await expect(teams.delete(team.id)).rejects.toBeInstanceOf(ConflictError);
  expect((await keys.findByHash(g.hash))?.key.revokedAt).not.toBeNull();

  const writer = createUsageWriter({ pool: pg.pool, log, spoolDir: path.join(dataDir, "spool"), flushIntervalMs: 60_000, copy: false });
  for (let i = 0; i < 25; i++) {
    writer.record(
      usageRow({
        keyId: rotated!.id,
        teamId: team.id,
        requestedModel: "mock-chat",
        servedModel: "mock-chat",
        promptTokens: 2,
        completionTokens: 3,
        cachedTokens: 1,
        cacheWriteTokens: 1,
        costUsd: 0.00125,
        latencyMs: 1,
        status: i < 5 ? 500 : 200,
        stream: i % 2 === 0,
        piiCounts: { EMAIL_ADDRESS: 1 },
      }),
    );
  }
  await writer.close();
  const report = await createPgUsageReport(pg.pool).aggregate({
    from: new Date(Date.now() - 60_000),
    to: new Date(Date.now() + 60_000),
    groupBy: "team",
  });
  expect(report).toEqual([
    {
      group: team.id,
      name: "embedded",
      requests: 25,
      promptTokens: 50,
      completionTokens: 75,
      cachedTokens: 25,
      cacheWriteTokens: 25,
      costUsd: 0.03125,
      unpricedRequests: 0,
      errors: 5,
      cacheHits: 0,
    },
  ]);

  // Restart from the same directory: the data is there and there is nothing left to migrate.
  await pg.pool.end();
  await embedded.stop();
  embedded = await startEmbeddedPostgres({ dataDir, log });
  pg = createPostgres({ url: embedded.url, log, ...embedded.poolOptions });
  try {
    expect((await migrate(pg.pool, { log })).applied).toEqual([]);
    expect((await createPgTeamStore(pg.pool).get(team.id))?.name).toBe("embedded");
    const { rows } = await pg.pool.query("SELECT count(*)::int AS n FROM usage");
    expect(rows[0].n).toBe(25);
  } finally {
    await pg.pool.end();
  }
}, 180_000);
