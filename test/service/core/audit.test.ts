/**
 * The audit log through the real app and real PostgreSQL: one event per successful admin change (written in the
 * change's transaction), none for a rejected one, never a secret; GET /internal/audit filters and pages newest
 * first. The knowledge-base events run against a real Chroma server; one test runs the stores on embedded PGlite.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../../service/adapters/migrations";
import { createPgAuditLog } from "../../../service/adapters/pg-audit";
import { createPgKeyStore, createPgTeamStore } from "../../../service/adapters/pg-stores";
import { startEmbeddedPostgres } from "../../../service/adapters/pglite";
import { createPostgres } from "../../../service/adapters/postgres";
import { generateApiKey, hashApiKey } from "../../../service/lib/keys";
import { startTestChroma, type TestChroma } from "../../helpers/chroma";
import { startProxy, type TestProxy } from "../../helpers/proxy";

let proxy: TestProxy;

interface CallOptions {
  body?: unknown;
  key?: string | null;
  headers?: Record<string, string>;
}

async function call(
  target: TestProxy,
  method: string,
  path: string,
  opts: CallOptions = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  const key = opts.key === undefined ? target.masterKey : opts.key;
  if (key) headers.authorization = `Bearer ${key}`;
  let payload: string | undefined;
  if (opts.body !== undefined) {
    payload = JSON.stringify(opts.body);
    headers["content-type"] = "application/json";
  }
  const res = await fetch(`${target.url}${path}`, { method, headers, body: payload });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const admin = (method: string, path: string, opts?: CallOptions) => call(proxy, method, path, opts);

async function auditRows(target: TestProxy = proxy): Promise<any[]> {
  const { rows } = await target.pool.query("SELECT * FROM audit_events ORDER BY at, id");
  return rows;
}

/** Run `action` and return the audit rows it added. */
async function added(action: () => Promise<unknown>, target: TestProxy = proxy): Promise<any[]> {
  const seen = new Set((await auditRows(target)).map((r) => r.id));
  await action();
  return (await auditRows(target)).filter((r) => !seen.has(r.id));
}

/** Run `action` (a request), expect `status`, and return the single audit row it added. */
async function oneEvent(
  status: number,
  action: () => Promise<{ status: number; body: any }>,
  target: TestProxy = proxy,
): Promise<{ row: any; body: any }> {
  let res: { status: number; body: any } = { status: 0, body: null };
  const rows = await added(async () => {
    res = await action();
  }, target);
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(rows).toHaveLength(1);
  return { row: rows[0], body: res.body };
}

beforeAll(async () => {
  // One proxy in front (an ingress) appends the client's address to X-Forwarded-For.
  proxy = await startProxy({ env: { TRUSTED_PROXY_HOPS: "1" } });
});
afterAll(async () => {
  await proxy?.close();
});

describe("audit: the client address", () => {
  const ipOf = async (target: TestProxy, xff: string | null) => {
    const { row } = await oneEvent(
      201,
      () =>
        call(target, "POST", "/internal/teams", {
          body: { name: `audit-ip-${crypto.randomUUID()}` },
          headers: xff === null ? {} : { "x-forwarded-for": xff },
        }),
      target,
    );
    return row.client_ip as string | null;
  };

  it("believes only the X-Forwarded-For entries the trusted proxies appended, and only IP addresses", async () => {
    // What the client wrote comes first; the ingress appended the address it saw.
    expect(await ipOf(proxy, "203.0.113.66, 198.51.100.9")).toBe("198.51.100.9");
    // Azure Application Gateway writes ip:port.
    expect(await ipOf(proxy, "203.0.113.66, 198.51.100.9:51234")).toBe("198.51.100.9");
    // Not an address: the socket's peer instead.
    expect(await ipOf(proxy, "<script>")).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
    expect(await ipOf(proxy, null)).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
  });

  it("without TRUSTED_PROXY_HOPS the header is ignored: a client cannot choose its recorded address", async () => {
    const direct = await startProxy();
    try {
      expect(await ipOf(direct, "203.0.113.66")).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
    } finally {
      await direct.close();
    }
  });
});

describe("audit: team changes", () => {
  it("create, update and delete each record one event with actor, request id, client ip and changes", async () => {
    const created = await oneEvent(201, () =>
      admin("POST", "/internal/teams", {
        body: { name: "audit-research", requests_per_minute: 60 },
        headers: { "x-request-id": "audit-req-1", "x-forwarded-for": "203.0.113.7" },
      }),
    );
    const id = created.body.id as string;
    expect(created.row).toMatchObject({
      actor: "master",
      action: "team.created",
      target_type: "team",
      target_id: id,
      request_id: "audit-req-1",
      client_ip: "203.0.113.7",
    });
    expect(created.row.changes).toEqual({
      name: { before: null, after: "audit-research" },
      requests_per_minute: { before: null, after: 60 },
      tokens_per_minute: { before: null, after: null },
      tokens_per_day: { before: null, after: null },
      allowed_models: { before: null, after: null },
      budget_usd_per_month: { before: null, after: null },
    });

    // Only the fields that changed, with their old and new values; null means "back to the default".
    const limits = await oneEvent(200, () =>
      admin("PATCH", `/internal/teams/${id}`, {
        body: { requests_per_minute: null, tokens_per_day: 5000, tokens_per_minute: null },
      }),
    );
    expect(limits.row).toMatchObject({ action: "team.updated", target_type: "team", target_id: id });
    expect(limits.row.changes).toEqual({
      requests_per_minute: { before: 60, after: null },
      tokens_per_day: { before: null, after: 5000 },
    });
    // Without x-request-id the generated one (echoed in the response header) is recorded.
    expect(limits.row.request_id).toMatch(/^[0-9a-f-]{36}$/);

    const renamed = await oneEvent(200, () =>
      admin("PATCH", `/internal/teams/${id}`, { body: { name: "audit-platform" } }),
    );
    expect(renamed.row.changes).toEqual({ name: { before: "audit-research", after: "audit-platform" } });

    const deleted = await oneEvent(200, () => admin("DELETE", `/internal/teams/${id}`));
    expect(deleted.row).toMatchObject({ action: "team.deleted", target_type: "team", target_id: id });
    expect(deleted.row.changes).toEqual({
      name: { before: "audit-platform", after: null },
      requests_per_minute: { before: null, after: null },
      tokens_per_minute: { before: null, after: null },
      tokens_per_day: { before: 5000, after: null },
      allowed_models: { before: null, after: null },
      budget_usd_per_month: { before: null, after: null },
    });
  });
});

describe("audit: key changes", () => {
  it("create, update, revoke and rotate each record one event on the key", async () => {
    const team = await admin("POST", "/internal/teams", { body: { name: "audit-key-team" } });
    const expiresAt = new Date(Date.now() + 30 * 86_400_000).toISOString();
    const created = await oneEvent(201, () =>
      admin("POST", "/internal/keys", {
        body: {
          name: "ci",
          team_id: team.body.id,
          scopes: ["chat"],
          expires_at: expiresAt,
          tokens_per_day: 1000,
        },
      }),
    );
    const id = created.body.id as string;
    expect(created.row).toMatchObject({ actor: "master", action: "key.created", target_type: "api_key" });
    expect(created.row.target_id).toBe(id);
    expect(created.row.changes).toEqual({
      name: { before: null, after: "ci" },
      prefix: { before: null, after: created.body.prefix },
      team_id: { before: null, after: team.body.id },
      scopes: { before: null, after: ["chat"] },
      expires_at: { before: null, after: expiresAt },
      revoked_at: { before: null, after: null },
      rotated_from: { before: null, after: null },
      requests_per_minute: { before: null, after: null },
      tokens_per_minute: { before: null, after: null },
      tokens_per_day: { before: null, after: 1000 },
      allowed_models: { before: null, after: null },
      budget_usd_per_month: { before: null, after: null },
    });

    const updated = await oneEvent(200, () =>
      admin("PATCH", `/internal/keys/${id}`, {
        body: { scopes: ["chat", "embeddings"], expires_at: null, tokens_per_day: 2000, name: "ci" },
      }),
    );
    expect(updated.row).toMatchObject({ action: "key.updated", target_id: id });
    // `name` was sent unchanged, so it is not listed.
    expect(updated.row.changes).toEqual({
      scopes: { before: ["chat"], after: ["chat", "embeddings"] },
      expires_at: { before: expiresAt, after: null },
      tokens_per_day: { before: 1000, after: 2000 },
    });

    const rotated = await oneEvent(201, () => admin("POST", `/internal/keys/${id}/rotate`));
    const replacement = rotated.body.id as string;
    expect(rotated.row).toMatchObject({ action: "key.rotated", target_type: "api_key", target_id: id });
    expect(Object.keys(rotated.row.changes).sort()).toEqual(["replaced_by", "revoked_at"]);
    expect(rotated.row.changes.replaced_by).toEqual({ before: null, after: replacement });
    expect(rotated.row.changes.revoked_at.before).toBeNull();
    expect(Date.parse(rotated.row.changes.revoked_at.after)).toBeGreaterThan(Date.now() - 60_000);

    const revoked = await oneEvent(200, () => admin("POST", `/internal/keys/${replacement}/revoke`));
    expect(revoked.row).toMatchObject({
      action: "key.revoked",
      target_type: "api_key",
      target_id: replacement,
    });
    expect(revoked.row.changes).toEqual({ revoked_at: { before: null, after: revoked.body.revoked_at } });
  });

  it("revoking a revoked key again answers the first revocation and records no second event", async () => {
    const created = await admin("POST", "/internal/keys", { body: { name: "twice" } });
    const id = created.body.id as string;
    const first = await oneEvent(200, () => admin("POST", `/internal/keys/${id}/revoke`));
    let again: { status: number; body: any } = { status: 0, body: null };
    const rows = await added(async () => {
      again = await admin("POST", `/internal/keys/${id}/revoke`);
    });
    expect(again.status).toBe(200);
    expect(again.body.revoked_at).toBe(first.body.revoked_at);
    expect(rows).toEqual([]);
  });
});

describe("audit: rejected requests record nothing", () => {
  it("400, 404 and 409 from every kind of admin write leave no event (and no change)", async () => {
    const team = await admin("POST", "/internal/teams", { body: { name: "audit-busy" } });
    const active = await admin("POST", "/internal/keys", { body: { name: "active", team_id: team.body.id } });
    const revoked = await admin("POST", "/internal/keys", { body: { name: "gone" } });
    await admin("POST", `/internal/keys/${revoked.body.id}/revoke`);
    const keysBefore = (await admin("GET", "/internal/keys")).body.data.length;
    const unknown = crypto.randomUUID();

    const failures: Array<[number, string, string, unknown?]> = [
      [400, "POST", "/internal/teams", { name: "x", requests_per_minute: -1 }],
      [409, "POST", "/internal/teams", { name: "audit-busy" }],
      [404, "PATCH", `/internal/teams/${unknown}`, { name: "nobody" }],
      [
        409,
        "PATCH",
        `/internal/teams/${(await admin("POST", "/internal/teams", { body: { name: "audit-other" } })).body.id}`,
        { name: "audit-busy" },
      ],
      [400, "PATCH", "/internal/teams/not-a-uuid", { name: "x" }],
      [404, "DELETE", `/internal/teams/${unknown}`],
      [409, "DELETE", `/internal/teams/${team.body.id}`],
      // The foreign key fails inside the transaction: neither the key nor its event may survive.
      [400, "POST", "/internal/keys", { name: "orphan", team_id: unknown }],
      [400, "POST", "/internal/keys", { name: "past", expires_at: "2001-01-01T00:00:00Z" }],
      [404, "PATCH", `/internal/keys/${unknown}`, { name: "nobody" }],
      [400, "PATCH", `/internal/keys/${active.body.id}`, { scopes: ["nope"] }],
      [404, "POST", `/internal/keys/${unknown}/revoke`],
      [404, "POST", `/internal/keys/${unknown}/rotate`],
      [409, "POST", `/internal/keys/${revoked.body.id}/rotate`],
    ];
    const rows = await added(async () => {
      for (const [status, method, path, body] of failures) {
        const res = await admin(method, path, body === undefined ? {} : { body });
        expect(res.status, `${method} ${path}`).toBe(status);
      }
    });
    expect(rows).toEqual([]);
    expect((await admin("GET", "/internal/keys")).body.data.length).toBe(keysBefore);
    expect((await admin("GET", `/internal/teams/${team.body.id}`)).body.name).toBe("audit-busy");
  });
});

describe("audit: atomicity", () => {
  it("a change whose event cannot be written is rolled back (500), so no change goes unaudited", async () => {
    // Make PostgreSQL refuse this one event: the team insert before it must roll back with it.
    await proxy.pool.query(
      "ALTER TABLE audit_events ADD CONSTRAINT refuse_test CHECK (changes->'name'->>'after' <> 'audit-unrecordable')",
    );
    try {
      const res = await admin("POST", "/internal/teams", { body: { name: "audit-unrecordable" } });
      expect(res.status).toBe(500);
    } finally {
      await proxy.pool.query("ALTER TABLE audit_events DROP CONSTRAINT refuse_test");
    }
    const teams = (await admin("GET", "/internal/teams")).body.data.map((t: any) => t.name);
    expect(teams).not.toContain("audit-unrecordable");
    // The same request succeeds, with its event, once the event can be written.
    const retry = await oneEvent(201, () =>
      admin("POST", "/internal/teams", { body: { name: "audit-unrecordable" } }),
    );
    expect(retry.row.action).toBe("team.created");
  });

  it("on PGlite's single connection, audited changes run in one transaction without a second connection", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-audit-pglite-"));
    const log = pino({ level: "silent" });
    const embedded = await startEmbeddedPostgres({ dataDir, log });
    const { pool } = createPostgres({ url: embedded.url, log, ...embedded.poolOptions });
    try {
      await migrate(pool, { log });
      const ctx = { actor: "master", requestId: "pglite-1", clientIp: "127.0.0.1" };
      const teams = createPgTeamStore(pool);
      const keys = createPgKeyStore(pool);
      const team = await teams.create(
        { name: "embedded", limits: { requestsPerMinute: 1, tokensPerMinute: null, tokensPerDay: null } },
        ctx,
      );
      await teams.update(team.id, { limits: { requestsPerMinute: 2 } }, ctx);
      const g = generateApiKey();
      const key = await keys.create(
        {
          name: "k",
          teamId: null,
          scopes: ["chat"],
          expiresAt: null,
          limits: { requestsPerMinute: null, tokensPerMinute: null, tokensPerDay: null },
          hash: g.hash,
          prefix: g.prefix,
        },
        ctx,
      );
      const replacement = await keys.rotate(key.id, generateApiKey(), ctx);
      await expect(keys.revoke(replacement!.id, ctx)).resolves.not.toBeNull();
      await teams.delete(team.id, ctx);
      const { events, next } = await createPgAuditLog(pool).list({ limit: 10 });
      expect(events.map((e) => e.action)).toEqual([
        "team.deleted",
        "key.revoked",
        "key.rotated",
        "key.created",
        "team.updated",
        "team.created",
      ]);
      expect(next).toBeNull();
      expect(events[4].changes).toEqual({ requests_per_minute: { before: 1, after: 2 } });
    } finally {
      await pool.end();
      await embedded.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("audit: secrets", () => {
  it("neither a created nor a rotated key, nor their hashes, appear anywhere in the audit rows or the API", async () => {
    const created = await admin("POST", "/internal/keys", { body: { name: "secret-check" } });
    const rotated = await admin("POST", `/internal/keys/${created.body.id}/rotate`);
    expect(created.status).toBe(201);
    expect(rotated.status).toBe(201);
    const secrets: string[] = [];
    for (const { key, prefix } of [created.body, rotated.body] as Array<{ key: string; prefix: string }>) {
      const hash = hashApiKey(key);
      // The key, its random part beyond the public display prefix, and its hash in either case.
      secrets.push(key, key.slice(prefix.length), hash, hash.toUpperCase());
    }
    // Every column of every row, as PostgreSQL renders it.
    const { rows } = await proxy.pool.query<{ t: string }>("SELECT e::text AS t FROM audit_events e");
    const stored = rows.map((r) => r.t).join("\n");
    const listed = JSON.stringify((await admin("GET", "/internal/audit?limit=1000")).body);
    expect(stored).toContain(created.body.id);
    expect(listed).toContain(created.body.id);
    for (const secret of secrets) {
      expect(stored.includes(secret)).toBe(false);
      expect(listed.includes(secret)).toBe(false);
    }
  });
});

describe("GET /internal/audit", () => {
  const target = `audit-page-${crypto.randomUUID()}`;
  /** Inserted directly, so times (to the microsecond, with ties) are exact; listed oldest first. */
  const times = [
    "2021-03-01T10:00:00.000000Z",
    "2021-03-01T10:00:00.000100Z",
    "2021-03-01T10:00:00.000200Z",
    "2021-03-01T10:00:01.000000Z",
    "2021-03-01T10:00:01.000000Z",
    "2021-03-01T10:00:01.000000Z",
    "2021-03-02T00:00:00.000000Z",
  ];
  const ids: string[] = [];

  beforeAll(async () => {
    for (const [i, at] of times.entries()) {
      const action = i % 2 ? "team.updated" : "team.created";
      const { rows } = await proxy.pool.query<{ id: string }>(
        `INSERT INTO audit_events (at, actor, action, target_type, target_id, changes)
         VALUES ($1, 'master', $2, 'team', $3, $4::jsonb) RETURNING id`,
        [at, action, target, JSON.stringify({ n: { before: null, after: i } })],
      );
      ids.push(rows[0].id);
    }
  });

  /** Expected newest-first order: by time, then by id, both descending. */
  const newestFirst = () =>
    times
      .map((at, i) => ({ at, id: ids[i], n: i }))
      .sort((a, b) => (a.at === b.at ? (a.id < b.id ? 1 : -1) : a.at < b.at ? 1 : -1));

  it("answers a list of events, newest first, in the admin API's JSON shape", async () => {
    const res = await admin("GET", `/internal/audit?target_id=${target}`);
    expect(res.status).toBe(200);
    expect(res.body.object).toBe("list");
    expect(res.body.next_cursor).toBeNull();
    expect(res.body.data.map((e: any) => e.id)).toEqual(newestFirst().map((e) => e.id));
    expect(res.body.data[0]).toEqual({
      id: ids[6],
      object: "audit_event",
      at: "2021-03-02T00:00:00.000Z",
      actor: "master",
      action: "team.created",
      target_type: "team",
      target_id: target,
      request_id: null,
      client_ip: null,
      changes: { n: { before: null, after: 6 } },
    });
  });

  it("pages with limit and cursor through ties and sub-millisecond times without gaps or repeats", async () => {
    for (const limit of [1, 2, 3]) {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `target_id=${target}&limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`;
        const res = await admin("GET", `/internal/audit?${query}`);
        expect(res.status).toBe(200);
        expect(res.body.data.length).toBeLessThanOrEqual(limit);
        seen.push(...res.body.data.map((e: any) => e.id));
        cursor = res.body.next_cursor;
        pages++;
      } while (cursor);
      expect(seen, `limit=${limit}`).toEqual(newestFirst().map((e) => e.id));
      expect(pages).toBe(Math.ceil(times.length / limit));
    }
  });

  it("filters by action, target and [from, to)", async () => {
    const byAction = await admin("GET", `/internal/audit?target_id=${target}&action=team.updated`);
    // 3 and 5 share a time: the id breaks the tie.
    expect(byAction.body.data.map((e: any) => e.changes.n.after)).toEqual(
      newestFirst()
        .filter((e) => e.n % 2 === 1)
        .map((e) => e.n),
    );

    const window = await admin(
      "GET",
      `/internal/audit?target_id=${target}&from=2021-03-01T10:00:00Z&to=2021-03-01T10:00:01Z`,
    );
    // `from` is inclusive (0 is at exactly 10:00:00), `to` exclusive (3, 4 and 5 are at exactly 10:00:01).
    expect(window.body.data.map((e: any) => e.changes.n.after)).toEqual([2, 1, 0]);

    const day = await admin("GET", `/internal/audit?target_id=${target}&from=2021-03-02`);
    expect(day.body.data.map((e: any) => e.changes.n.after)).toEqual([6]);

    const otherTarget = await admin("GET", `/internal/audit?target_id=${crypto.randomUUID()}`);
    expect(otherTarget.body).toEqual({ object: "list", data: [], next_cursor: null });

    // Without a target filter every event is listed, the real ones (this year) before the 2021 ones.
    const all = await admin("GET", "/internal/audit?limit=1000");
    const ats = all.body.data.map((e: any) => Date.parse(e.at));
    expect(ats).toEqual([...ats].sort((a, b) => b - a));
    expect(all.body.data.filter((e: any) => e.target_id === target)).toHaveLength(times.length);
  });

  it("returns 100 events by default and at most 1000", async () => {
    const bulk = `audit-bulk-${crypto.randomUUID()}`;
    await proxy.pool.query(
      `INSERT INTO audit_events (at, actor, action, target_type, target_id)
       SELECT now() - g * interval '1 second', 'master', 'key.updated', 'api_key', $1 FROM generate_series(1, 1005) g`,
      [bulk],
    );
    const first = await admin("GET", `/internal/audit?target_id=${bulk}`);
    expect(first.body.data).toHaveLength(100);
    expect(first.body.next_cursor).toEqual(expect.any(String));
    const max = await admin("GET", `/internal/audit?target_id=${bulk}&limit=1000`);
    expect(max.body.data).toHaveLength(1000);
    const rest = await admin(
      "GET",
      `/internal/audit?target_id=${bulk}&limit=1000&cursor=${max.body.next_cursor}`,
    );
    expect(rest.body.data).toHaveLength(5);
    expect(rest.body.next_cursor).toBeNull();
  });

  it("rejects bad parameters with 400 naming the parameter", async () => {
    const bad: Array<[string, string]> = [
      ["limit=0", "limit"],
      ["limit=1001", "limit"],
      ["limit=ten", "limit"],
      ["limit=2.5", "limit"],
      ["limit=1&limit=2", "limit"],
      ["from=yesterday", "from"],
      ["to=2021-13-45", "to"],
      ["from=2021-03-02&to=2021-03-01", "from"],
      ["action=key.deleted", "action"],
      ["target_id=", "target_id"],
      ["cursor=bm9wZQ", "cursor"],
      [
        `cursor=${Buffer.from(`2021-03-01T10:00:00.000000Z|not-a-uuid-at-all-not-a-uuid-at-all`).toString("base64url")}`,
        "cursor",
      ],
    ];
    for (const [query, param] of bad) {
      const res = await admin("GET", `/internal/audit?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.error, query).toMatchObject({ type: "invalid_request_error", param });
      expect(res.body.error.message, query).toContain(param);
    }
  });

  it("needs the master key: 401 without a key, 403 with an API key (even a `*` one)", async () => {
    const { key } = await proxy.createKey({ scopes: ["*"] });
    const anonymous = await admin("GET", "/internal/audit", { key: null });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.type).toBe("authentication_error");
    const withKey = await admin("GET", "/internal/audit", { key });
    expect(withKey.status).toBe(403);
    expect(withKey.body.error.code).toBe("master_key_required");
    const wrongMaster = await admin("GET", "/internal/audit", { key: `${proxy.masterKey}x` });
    expect(wrongMaster.status).toBe(403);
  });
});

describe("audit: knowledge-base changes", () => {
  let chroma: TestChroma;
  let kbProxy: TestProxy;
  let writer: { id: string; key: string };
  const kb = (method: string, path: string, opts?: CallOptions) => call(kbProxy, method, path, opts);

  beforeAll(async () => {
    chroma = await startTestChroma();
    kbProxy = await startProxy({
      env: { CHROMA_URL: chroma.url },
      configYaml: [
        "providers:",
        "  mock: { type: mock }",
        "models:",
        "  - { name: mock-embedding, provider: mock, kind: embedding }",
        "embedding_model: mock-embedding",
        "rag: { collection: audited, chunk_tokens: 128, chunk_overlap: 16 }",
      ].join("\n"),
    });
    writer = await kbProxy.createKey({ scopes: ["kb:write"] });
  });
  afterAll(async () => {
    await kbProxy?.close();
    await chroma?.stop();
  });

  it("upload, ingest, delete and reset each record one event with counts, never content", async () => {
    const content =
      "# Paging\n\nThe on-call engineer acknowledges a page within five minutes, day or night.\n";
    const uploaded = await oneEvent(
      201,
      () => kb("POST", "/internal/kb/upload", { key: writer.key, body: { path: "ops/paging.md", content } }),
      kbProxy,
    );
    expect(uploaded.row).toMatchObject({
      actor: `key:${writer.id}`,
      action: "kb.uploaded",
      target_type: "kb_source",
      target_id: "ops/paging.md",
    });
    expect(uploaded.row.changes).toEqual({
      bytes: { before: null, after: Buffer.byteLength(content) },
      chunks: { before: null, after: uploaded.body.chunks },
    });
    expect(JSON.stringify(uploaded.row)).not.toContain("acknowledges");

    const ingested = await oneEvent(
      200,
      () => kb("POST", "/internal/kb/ingest", { body: { path: "ops" } }),
      kbProxy,
    );
    expect(ingested.row).toMatchObject({ actor: "master", action: "kb.ingested", target_id: "ops" });
    expect(ingested.row.changes).toEqual({
      files: { before: null, after: 1 },
      chunks: { before: null, after: ingested.body.chunks },
    });

    const deleted = await oneEvent(
      200,
      () => kb("DELETE", "/internal/kb/source?path=ops/paging.md", { key: writer.key }),
      kbProxy,
    );
    expect(deleted.row).toMatchObject({ action: "kb.source_deleted", target_id: "ops/paging.md" });
    expect(deleted.row.changes).toEqual({ chunks: { before: deleted.body.deleted, after: 0 } });
    expect(deleted.body.deleted).toBeGreaterThan(0);

    const reset = await oneEvent(200, () => kb("POST", "/internal/kb/reset"), kbProxy);
    expect(reset.row).toMatchObject({
      actor: "master",
      action: "kb.reset",
      target_type: "kb_collection",
      target_id: "audited",
      changes: {},
    });
  });

  it("rejected knowledge-base requests and reads record nothing", async () => {
    const rows = await added(async () => {
      expect(
        (await kb("POST", "/internal/kb/upload", { body: { path: "../out.md", content: "x" } })).status,
      ).toBe(400);
      expect((await kb("DELETE", "/internal/kb/source")).status).toBe(400);
      expect((await kb("POST", "/internal/kb/reset", { key: writer.key })).status).toBe(403);
      expect((await kb("GET", "/internal/kb/stats")).status).toBe(200);
    }, kbProxy);
    expect(rows).toEqual([]);
  });
});
