import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConflictError, InvalidRequestError } from "../../../service/errors";
import { generateApiKey } from "../../../service/lib/keys";
import { migrate } from "../../../service/adapters/migrations";
import { createPgKeyStore, createPgTeamStore, createPgUsageReport } from "../../../service/adapters/pg-stores";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../../service/adapters/pglite";
import { createPostgres } from "../../../service/adapters/postgres";
import { insertUsageRows } from "../../../service/adapters/usage-writer";
import type { KeyStore, LimitOverrides, TeamStore, UsageRow } from "../../../service/ports";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres";
import { usageRow } from "../../helpers/usage";

const log = pino({ level: "silent" });
const NO_LIMITS: LimitOverrides = { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null };

describe("pg stores", () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let keys: KeyStore;
  let teams: TeamStore;

  beforeAll(async () => {
    db = await createTestDatabase();
    ({ pool } = createPostgres({ url: db.url, log, max: 4 }));
    await migrate(pool, { log });
    keys = createPgKeyStore(pool);
    teams = createPgTeamStore(pool);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  const newKey = (teamId: string | null, extra: Partial<Parameters<KeyStore["create"]>[0]> = {}) => {
    const g = generateApiKey();
    return keys.create({
      name: "k",
      teamId,
      scopes: ["chat"],
      expiresAt: null,
      limits: NO_LIMITS,
      hash: g.hash,
      prefix: g.prefix,
      ...extra,
    });
  };

  it("teams: create, get, list, update limits (partial), unique names", async () => {
    const t = await teams.create({ name: "alpha", limits: { requestsPerMinute: 10, tokensPerMinute: 0, tokensPerDay: null } });
    expect(t).toMatchObject({ name: "alpha", limits: { requestsPerMinute: 10, tokensPerMinute: 0, tokensPerDay: null } });
    expect(await teams.get(t.id)).toEqual(t);
    expect((await teams.list()).map((x) => x.id)).toContain(t.id);

    const u = await teams.update(t.id, { limits: { tokensPerDay: 5_000_000_000 } });
    // Only the given field changed; bigint comes back as a number.
    expect(u?.limits).toEqual({ requestsPerMinute: 10, tokensPerMinute: 0, tokensPerDay: 5_000_000_000 });
    expect(Date.parse(u!.updatedAt)).toBeGreaterThanOrEqual(Date.parse(t.updatedAt));
    const reset = await teams.update(t.id, { name: "alpha2", limits: { requestsPerMinute: null } });
    expect(reset).toMatchObject({ name: "alpha2", limits: { requestsPerMinute: null, tokensPerMinute: 0 } });

    await expect(teams.create({ name: "alpha2", limits: NO_LIMITS })).rejects.toBeInstanceOf(ConflictError);
    expect(await teams.get("00000000-0000-4000-8000-000000000000")).toBeNull();
    expect(await teams.get("not-a-uuid")).toBeNull();
    expect(await teams.update("00000000-0000-4000-8000-000000000000", { name: "x" })).toBeNull();
  });

  it("keys: create, findByHash with team limits, list, update, revoke", async () => {
    const t = await teams.create({ name: "beta", limits: { requestsPerMinute: 3, tokensPerMinute: null, tokensPerDay: 0 } });
    const g = generateApiKey();
    const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
    const k = await keys.create({
      name: "svc",
      teamId: t.id,
      scopes: ["chat", "rag:docs"],
      expiresAt,
      limits: { requestsPerMinute: null, tokensPerMinute: 1000, tokensPerDay: null },
      hash: g.hash,
      prefix: g.prefix,
    });
    expect(k).toMatchObject({
      name: "svc",
      teamId: t.id,
      scopes: ["chat", "rag:docs"],
      expiresAt,
      revokedAt: null,
      rotatedFrom: null,
      prefix: g.prefix,
      limits: { requestsPerMinute: null, tokensPerMinute: 1000, tokensPerDay: null },
    });
    const found = await keys.findByHash(g.hash);
    expect(found).toEqual({
      key: k,
      teamLimits: { requestsPerMinute: 3, tokensPerMinute: null, tokensPerDay: 0 },
      teamAllowedModels: null,
      teamBudgetUsdPerMonth: null,
    });
    expect(await keys.findByHash(generateApiKey().hash)).toBeNull();

    const solo = await newKey(null);
    expect((await keys.findByHash((await pool.query("SELECT key_hash FROM api_keys WHERE id=$1", [solo.id])).rows[0].key_hash))?.teamLimits).toBeNull();

    const listed = (await keys.list()).keys;
    expect(listed.map((x) => x.id)).toEqual(expect.arrayContaining([k.id, solo.id]));
    expect(JSON.stringify(listed)).not.toContain(g.hash);

    const u = await keys.update(k.id, { scopes: ["*"], expiresAt: null, limits: { ...k.limits, tokensPerDay: 0 } });
    expect(u).toMatchObject({ scopes: ["*"], expiresAt: null, limits: { tokensPerMinute: 1000, tokensPerDay: 0 } });

    const r1 = await keys.revoke(k.id);
    expect(r1?.revokedAt).not.toBeNull();
    const r2 = await keys.revoke(k.id);
    expect(r2?.revokedAt).toBe(r1?.revokedAt);
    expect((await keys.findByHash(g.hash))?.key.revokedAt).toBe(r1?.revokedAt);
    expect(await keys.revoke("00000000-0000-4000-8000-000000000000")).toBeNull();
  });

  it("keys: an unknown team is a 400 naming team_id", async () => {
    const err = await newKey("00000000-0000-4000-8000-000000000000").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect((err as InvalidRequestError).param).toBe("team_id");
  });

  it("rotate: revokes the old key and creates the replacement with the same settings, atomically", async () => {
    const t = await teams.create({ name: "gamma", limits: NO_LIMITS });
    const old = await newKey(t.id, { name: "rot", scopes: ["chat", "embeddings"], limits: { requestsPerMinute: 7, tokensPerMinute: null, tokensPerDay: null } });
    const g = generateApiKey();
    const fresh = await keys.rotate(old.id, { hash: g.hash, prefix: g.prefix });
    expect(fresh).toMatchObject({
      name: "rot",
      teamId: t.id,
      scopes: ["chat", "embeddings"],
      rotatedFrom: old.id,
      revokedAt: null,
      prefix: g.prefix,
      limits: { requestsPerMinute: 7 },
    });
    expect(fresh!.id).not.toBe(old.id);
    expect((await keys.get(old.id))?.revokedAt).not.toBeNull();
    expect((await keys.findByHash(g.hash))?.key.id).toBe(fresh!.id);
    // Its rate-limit windows are the chain's: named by the first key, through any number of rotations.
    expect(old.rotationRoot).toBeNull();
    expect(fresh!.rotationRoot).toBe(old.id);
    const third = await keys.rotate(fresh!.id, generateApiKey());
    expect(third).toMatchObject({ rotatedFrom: fresh!.id, rotationRoot: old.id });

    // A rotated (revoked) key cannot be rotated again.
    await expect(keys.rotate(old.id, generateApiKey())).rejects.toBeInstanceOf(ConflictError);
    expect(await keys.rotate("00000000-0000-4000-8000-000000000000", generateApiKey())).toBeNull();

    // Atomicity: when creating the replacement fails (its hash is taken), the old key stays active.
    const victim = await newKey(t.id);
    await expect(keys.rotate(victim.id, { hash: g.hash, prefix: g.prefix })).rejects.toThrow();
    expect((await keys.get(victim.id))?.revokedAt).toBeNull();
    expect((await pool.query("SELECT count(*)::int AS n FROM api_keys WHERE rotated_from = $1", [victim.id])).rows[0].n).toBe(0);

    // Concurrent rotations of one key: exactly one wins.
    const target = await newKey(t.id);
    const results = await Promise.allSettled([keys.rotate(target.id, generateApiKey()), keys.rotate(target.id, generateApiKey())]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(rejected.reason).toBeInstanceOf(ConflictError);
  });

  it("rotate refuses an expired key", async () => {
    const k = await newKey(null, { expiresAt: new Date(Date.now() - 1000).toISOString() });
    await expect(keys.rotate(k.id, generateApiKey())).rejects.toMatchObject({ status: 409, code: "key_expired" });
  });

  it("team delete: 409 while any key that is not revoked references it, expired ones included", async () => {
    const t = await teams.create({ name: "delta", limits: NO_LIMITS });
    const active = await newKey(t.id);
    const expired = await newKey(t.id, { expiresAt: new Date(Date.now() - 1000).toISOString() });
    const err = await teams.delete(t.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ status: 409, code: "team_has_active_keys" });
    expect((err as ConflictError).message).toContain("2 keys that are not revoked (1 expired");
    expect((err as ConflictError).message).toContain(active.id);
    expect((err as ConflictError).message).toContain(expired.id);
    expect(await teams.get(t.id)).not.toBeNull();

    // An expired key still counts: a new expires_at would revive it, without its team once the team is gone.
    await keys.revoke(active.id);
    const still = await teams.delete(t.id).catch((e: unknown) => e);
    expect(still).toBeInstanceOf(ConflictError);
    expect((still as ConflictError).message).toContain("1 key that is not revoked (1 expired");
    expect((still as ConflictError).message).toContain("revoke it first");
    expect((await keys.get(expired.id))?.teamId).toBe(t.id);

    await keys.revoke(expired.id);
    expect(await teams.delete(t.id)).toBe(true);
    expect(await teams.get(t.id)).toBeNull();
    // The revoked keys survive without their team.
    expect((await keys.get(active.id))?.teamId).toBeNull();
    expect((await keys.get(expired.id))?.teamId).toBeNull();
    expect(await teams.delete(t.id)).toBe(false);
    expect(await teams.delete("nope")).toBe(false);
  });

  it("team delete: the message lists at most five key ids", async () => {
    const t = await teams.create({ name: "crowded", limits: NO_LIMITS });
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await newKey(t.id)).id);
    const err = (await teams.delete(t.id).catch((e: unknown) => e)) as ConflictError;
    expect(err.message).toContain("7 keys that are not revoked;");
    expect(ids.filter((id) => err.message.includes(id))).toHaveLength(5);
    expect(err.message).toContain("and 2 more");
  });

  it("an update that changes nothing writes nothing: no new updated_at, no audit event", async () => {
    const audit = { actor: "master", requestId: null, clientIp: null };
    const events = async (id: string) =>
      (await pool.query("SELECT action FROM audit_events WHERE target_id = $1 ORDER BY at", [id])).rows.map((r) => r.action);
    const keyUpdatedAt = async (id: string) =>
      (await pool.query("SELECT updated_at FROM api_keys WHERE id = $1", [id])).rows[0].updated_at.getTime();

    const t = await teams.create(
      { name: "same", limits: { requestsPerMinute: 1, tokensPerMinute: null, tokensPerDay: 0 }, allowedModels: ["m"], budgetUsdPerMonth: 1.5 },
      audit,
    );
    for (const patch of [
      {},
      { limits: {} },
      { name: "same", allowedModels: ["m"], budgetUsdPerMonth: 1.5, limits: { requestsPerMinute: 1, tokensPerMinute: null, tokensPerDay: 0 } },
    ]) {
      expect(await teams.update(t.id, patch, audit), JSON.stringify(patch)).toEqual(t);
    }
    expect(await events(t.id)).toEqual(["team.created"]);
    // Same name, so no unique-name conflict either; a missing team is still null.
    expect(await teams.update("00000000-0000-4000-8000-000000000000", {}, audit)).toBeNull();

    const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
    const k = await newKey(t.id, { expiresAt, allowedModels: ["m"], budgetUsdPerMonth: 2 });
    const since = await keyUpdatedAt(k.id);
    for (const patch of [
      {},
      { name: "k", scopes: ["chat"], expiresAt, allowedModels: ["m"], budgetUsdPerMonth: 2, limits: NO_LIMITS },
      // The same instant written another way is the same value.
      { expiresAt: expiresAt.replace("Z", "+00:00") },
    ]) {
      expect(await keys.update(k.id, patch, audit), JSON.stringify(patch)).toEqual(k);
    }
    expect(await events(k.id)).toEqual([]);
    expect(await keyUpdatedAt(k.id)).toBe(since);

    // One changed field among unchanged ones: one event naming it.
    const changed = await keys.update(k.id, { name: "k", allowedModels: ["m", "n"] }, audit);
    expect(changed?.allowedModels).toEqual(["m", "n"]);
    expect(await events(k.id)).toEqual(["key.updated"]);
    const { rows } = await pool.query("SELECT changes FROM audit_events WHERE target_id = $1", [k.id]);
    expect(rows[0].changes).toEqual({ allowed_models: { before: ["m"], after: ["m", "n"] } });
    expect(await keyUpdatedAt(k.id)).toBeGreaterThan(since);
  });

  it("usage report: groups by key, team, model and day over [from, to)", async () => {
    const t = await teams.create({ name: "eps", limits: NO_LIMITS });
    const k1 = await newKey(t.id);
    const k2 = await newKey(null);
    const base = new Date("2030-01-01T23:59:00Z");
    const row = (i: number, over: Partial<UsageRow>): UsageRow =>
      usageRow({
        createdAt: new Date(base.getTime() + i * 60_000),
        keyId: k1.id,
        teamId: t.id,
        requestedModel: "gpt-x",
        servedModel: "gpt-x",
        provider: "p",
        promptTokens: 10,
        completionTokens: 5,
        latencyMs: 12,
        ...over,
      });
    await insertUsageRows(pool, [
      row(0, { cachedTokens: 4, cacheWriteTokens: 6, costUsd: 0.00002 }),
      // Prompt tokens reported but no price known: counted as unpriced.
      row(1, { status: 502, errorCode: "upstream_error", completionTokens: 0, servedModel: null }),
      row(2, { keyId: k2.id, teamId: null, servedModel: "fallback-y", cacheHit: true, promptTokens: 0, completionTokens: 0, costUsd: 0 }),
      row(3, { status: 429, errorCode: "rate_limit_exceeded", promptTokens: 0, completionTokens: 0, costUsd: 0 }),
      // Outside the window.
      row(10_000, {}),
    ]);
    const from = base;
    const to = new Date(base.getTime() + 60 * 60_000);
    const report = createPgUsageReport(pool);

    const byKey = await report.aggregate({ from, to, groupBy: "key" });
    expect(byKey).toEqual(
      expect.arrayContaining([
        { group: k1.id, name: "k", requests: 3, promptTokens: 20, completionTokens: 5, cachedTokens: 4, cacheWriteTokens: 6, costUsd: 0.00002, unpricedRequests: 1, errors: 2, cacheHits: 0 },
        { group: k2.id, name: "k", requests: 1, promptTokens: 0, completionTokens: 0, cachedTokens: 0, cacheWriteTokens: 0, costUsd: 0, unpricedRequests: 0, errors: 0, cacheHits: 1 },
      ]),
    );
    expect(byKey).toHaveLength(2);

    const byTeam = await report.aggregate({ from, to, groupBy: "team" });
    expect(byTeam).toEqual([
      { group: t.id, name: "eps", requests: 3, promptTokens: 20, completionTokens: 5, cachedTokens: 4, cacheWriteTokens: 6, costUsd: 0.00002, unpricedRequests: 1, errors: 2, cacheHits: 0 },
      { group: null, name: null, requests: 1, promptTokens: 0, completionTokens: 0, cachedTokens: 0, cacheWriteTokens: 0, costUsd: 0, unpricedRequests: 0, errors: 0, cacheHits: 1 },
    ]);

    const byModel = await report.aggregate({ from, to, groupBy: "model" });
    expect(byModel.map((r) => [r.group, r.requests])).toEqual([
      ["fallback-y", 1],
      ["gpt-x", 3],
    ]);

    const byDay = await report.aggregate({ from, to, groupBy: "day" });
    expect(byDay.map((r) => [r.group, r.requests])).toEqual([
      ["2030-01-01", 1],
      ["2030-01-02", 3],
    ]);
    // Model groups carry no name.
    expect(byModel[0]).not.toHaveProperty("name");
  });

  it("usage report: weeks and months, filters, largest first and a limit", async () => {
    const t = await teams.create({ name: "board", limits: NO_LIMITS });
    const [a, b, c] = [await newKey(t.id, { name: "alpha" }), await newKey(t.id, { name: "beta" }), await newKey(null, { name: "gamma" })];
    // Sunday 2040-01-01 and the Monday after it are in different ISO weeks; the 31st and the 1st in different months.
    const at = (iso: string, over: Partial<UsageRow>) =>
      usageRow({ createdAt: new Date(iso), teamId: t.id, servedModel: "m1", requestedModel: "m1", provider: "p", ...over });
    await insertUsageRows(pool, [
      at("2040-01-01T12:00:00Z", { keyId: a.id, promptTokens: 100, completionTokens: 0, costUsd: 0.5 }),
      at("2040-01-02T12:00:00Z", { keyId: a.id, promptTokens: 100, completionTokens: 0, costUsd: 0.5 }),
      at("2040-01-31T12:00:00Z", { keyId: b.id, promptTokens: 10, completionTokens: 0, costUsd: 3 }),
      at("2040-02-01T12:00:00Z", { keyId: b.id, promptTokens: 10, completionTokens: 0, costUsd: null, servedModel: "m2", requestedModel: "m2" }),
      at("2040-02-01T13:00:00Z", { keyId: b.id, promptTokens: 10, completionTokens: 0, costUsd: 0, status: 500, errorCode: "upstream_error" }),
      at("2040-02-02T12:00:00Z", { keyId: c.id, teamId: null, promptTokens: 1, completionTokens: 0, costUsd: 0.1, route: "embeddings" }),
    ]);
    const report = createPgUsageReport(pool);
    const from = new Date("2040-01-01T00:00:00Z");
    const to = new Date("2040-03-01T00:00:00Z");

    const weeks = await report.aggregate({ from, to, groupBy: "week" });
    expect(weeks.map((r) => [r.group, r.requests])).toEqual([
      ["2039-12-26", 1],
      ["2040-01-02", 1],
      ["2040-01-30", 4],
    ]);
    const months = await report.aggregate({ from, to, groupBy: "month" });
    expect(months.map((r) => [r.group, r.requests])).toEqual([
      ["2040-01", 3],
      ["2040-02", 3],
    ]);

    // One team's spend by key, largest first: beta (3.00) before alpha (1.00); gamma is in no team.
    const byCost = await report.aggregate({ from, to, groupBy: "key", filter: { teamId: t.id }, orderBy: "cost_usd" });
    expect(byCost.map((r) => [r.name, r.requests, r.costUsd])).toEqual([
      ["beta", 3, 3],
      ["alpha", 2, 1],
    ]);
    // By tokens and by requests, with a limit: a leaderboard.
    expect((await report.aggregate({ from, to, groupBy: "key", orderBy: "total_tokens", limit: 1 })).map((r) => r.name)).toEqual(["alpha"]);
    expect((await report.aggregate({ from, to, groupBy: "key", orderBy: "requests", limit: 2 })).map((r) => r.name)).toEqual(["beta", "alpha"]);
    expect((await report.aggregate({ from, to, groupBy: "model", orderBy: "errors", limit: 1 }))[0]).toMatchObject({ group: "m1", errors: 1 });

    // Filters combine: one key's requests for one model; the model filter matches the model that answered.
    const one = await report.aggregate({ from, to, groupBy: "day", filter: { keyId: b.id, model: "m2" } });
    expect(one.map((r) => [r.group, r.requests])).toEqual([["2040-02-01", 1]]);
    expect((await report.aggregate({ from, to, groupBy: "route", filter: { route: "embeddings" } })).map((r) => [r.group, r.requests])).toEqual([["embeddings", 1]]);
    expect(await report.aggregate({ from, to, groupBy: "key", filter: { provider: "nobody" } })).toEqual([]);
  });
});

// The embedded default (PGlite, one connection) runs the same stores: the team-delete guard and the no-op update
// behave there as on PostgreSQL. One test: creating a PGlite database runs initdb in WASM (several seconds).
describe("pg stores on PGlite", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-pglite-stores-"));
  let embedded: EmbeddedPostgres | undefined;
  let pool: pg.Pool | undefined;

  afterAll(async () => {
    await pool?.end();
    await embedded?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("an expired key blocks its team's deletion; an unchanged update writes no event", async () => {
    embedded = await startEmbeddedPostgres({ dataDir, log });
    ({ pool } = createPostgres({ url: embedded.url, log, ...embedded.poolOptions }));
    await migrate(pool, { log });
    const teams = createPgTeamStore(pool);
    const keys = createPgKeyStore(pool);
    const audit = { actor: "master", requestId: null, clientIp: null };

    const t = await teams.create({ name: "embedded", limits: NO_LIMITS, allowedModels: ["m"] }, audit);
    const g = generateApiKey();
    const expiresAt = new Date(Date.now() - 1000).toISOString();
    const k = await keys.create(
      { name: "k", teamId: t.id, scopes: ["chat"], expiresAt, limits: NO_LIMITS, hash: g.hash, prefix: g.prefix },
      audit,
    );
    await expect(teams.delete(t.id, audit)).rejects.toMatchObject({ status: 409, code: "team_has_active_keys" });

    expect(await teams.update(t.id, { name: "embedded", allowedModels: ["m"], limits: {} }, audit)).toEqual(t);
    expect(await keys.update(k.id, { name: "k", expiresAt, limits: NO_LIMITS }, audit)).toEqual(k);
    const { rows } = await pool.query("SELECT action FROM audit_events ORDER BY at, id");
    expect(rows.map((r) => r.action)).toEqual(["team.created", "key.created"]);

    await keys.revoke(k.id, audit);
    expect(await teams.delete(t.id, audit)).toBe(true);
  }, 180_000);
});
