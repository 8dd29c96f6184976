import crypto from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashApiKey } from "../../../service/lib/keys";
import type { UsageRow } from "../../../service/ports";
import { startProxy, type TestProxy } from "../../helpers/proxy";
import { usageRow } from "../../helpers/usage";

let proxy: TestProxy;

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; raw?: string; key?: string | null } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  const key = opts.key === undefined ? proxy.masterKey : opts.key;
  if (key) headers.authorization = `Bearer ${key}`;
  let payload: string | undefined;
  if (opts.raw !== undefined) payload = opts.raw;
  else if (opts.body !== undefined) payload = JSON.stringify(opts.body);
  if (payload !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${proxy.url}${path}`, { method, headers, body: payload });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const models = (key: string) => fetch(`${proxy.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });

beforeAll(async () => {
  proxy = await startProxy();
});
afterAll(async () => {
  await proxy?.close();
});

describe("admin API: access", () => {
  const routes: Array<[string, string]> = [
    ["POST", "/internal/teams"],
    ["GET", "/internal/teams"],
    ["GET", `/internal/teams/${crypto.randomUUID()}`],
    ["PATCH", `/internal/teams/${crypto.randomUUID()}`],
    ["DELETE", `/internal/teams/${crypto.randomUUID()}`],
    ["POST", "/internal/keys"],
    ["GET", "/internal/keys"],
    ["GET", `/internal/keys/${crypto.randomUUID()}`],
    ["PATCH", `/internal/keys/${crypto.randomUUID()}`],
    ["POST", `/internal/keys/${crypto.randomUUID()}/revoke`],
    ["POST", `/internal/keys/${crypto.randomUUID()}/rotate`],
    ["GET", "/internal/usage"],
  ];

  it("every route needs the master key: 401 without a key, 403 with an API key (even a `*` one)", async () => {
    const { key } = await proxy.createKey({ scopes: ["*"] });
    for (const [method, path] of routes) {
      const body = method === "GET" ? undefined : {};
      const anonymous = await call(method, path, { key: null, body });
      expect(anonymous.status, `${method} ${path}`).toBe(401);
      expect(anonymous.body.error.type).toBe("authentication_error");
      const withApiKey = await call(method, path, { key, body });
      expect(withApiKey.status, `${method} ${path}`).toBe(403);
      expect(withApiKey.body.error.code).toBe("master_key_required");
    }
  });
});

describe("admin API: teams", () => {
  it("create, list, get, partial PATCH of limits, delete", async () => {
    const created = await call("POST", "/internal/teams", {
      body: { name: "research", requests_per_minute: 60, tokens_per_minute: 0 },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      object: "team",
      name: "research",
      requests_per_minute: 60,
      tokens_per_minute: 0,
      tokens_per_day: null,
    });
    const id = created.body.id as string;
    expect(Object.keys(created.body)).not.toContain("limits");

    const list = await call("GET", "/internal/teams");
    expect(list.body.object).toBe("list");
    expect(list.body.data.map((t: { id: string }) => t.id)).toContain(id);
    // A GET also shows what the team spent this month.
    expect((await call("GET", `/internal/teams/${id}`)).body).toEqual({ ...created.body, spent_usd_this_month: 0 });

    // Absent fields are unchanged; null returns a budget to the default.
    const p1 = await call("PATCH", `/internal/teams/${id}`, { body: { tokens_per_day: 1_000_000 } });
    expect(p1.status).toBe(200);
    expect(p1.body).toMatchObject({ requests_per_minute: 60, tokens_per_minute: 0, tokens_per_day: 1_000_000 });
    const p2 = await call("PATCH", `/internal/teams/${id}`, { body: { requests_per_minute: null, name: "research-2" } });
    expect(p2.body).toMatchObject({ name: "research-2", requests_per_minute: null, tokens_per_minute: 0 });

    const deleted = await call("DELETE", `/internal/teams/${id}`);
    expect(deleted).toEqual({ status: 200, body: { id, object: "team", deleted: true } });
    expect((await call("GET", `/internal/teams/${id}`)).status).toBe(404);
    expect((await call("DELETE", `/internal/teams/${id}`)).status).toBe(404);
  });

  it("validation: negative, fractional or string limits, unknown fields, empty names → 400 naming the field", async () => {
    const cases: Array<[unknown, string]> = [
      [{ name: "x", requests_per_minute: -1 }, "requests_per_minute"],
      [{ name: "x", tokens_per_day: 1.5 }, "tokens_per_day"],
      [{ name: "x", tokens_per_minute: "100" }, "tokens_per_minute"],
      [{ name: "" }, "name"],
      [{}, "name"],
      [{ name: "x", colour: "red" }, "colour"],
    ];
    for (const [body, param] of cases) {
      const r = await call("POST", "/internal/teams", { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.param).toBe(param);
      expect(r.body.error.message).toContain(param);
    }
    expect((await call("POST", "/internal/teams", { raw: "{not json" })).status).toBe(400);
    expect((await call("POST", "/internal/teams", { body: [1, 2] })).status).toBe(400);
    const big = await call("POST", "/internal/teams", { raw: JSON.stringify({ name: "x".repeat(100_000) }) });
    expect(big.status).toBe(413);
  });

  it("duplicate name → 409; bad uuid → 400; unknown id → 404", async () => {
    expect((await call("POST", "/internal/teams", { body: { name: "dup" } })).status).toBe(201);
    const dup = await call("POST", "/internal/teams", { body: { name: "dup" } });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe("team_exists");

    const bad = await call("PATCH", "/internal/teams/not-a-uuid", { body: { name: "y" } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.param).toBe("id");
    const unknown = await call("PATCH", `/internal/teams/${crypto.randomUUID()}`, { body: { name: "y" } });
    expect(unknown.status).toBe(404);
  });

  it("delete is refused (409) while an active key belongs to the team", async () => {
    const team = (await call("POST", "/internal/teams", { body: { name: "busy" } })).body;
    const key = (await call("POST", "/internal/keys", { body: { name: "k", team_id: team.id } })).body;
    const refused = await call("DELETE", `/internal/teams/${team.id}`);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe("team_has_active_keys");
    await call("POST", `/internal/keys/${key.id}/revoke`);
    expect((await call("DELETE", `/internal/teams/${team.id}`)).status).toBe(200);
  });

  it("delete is refused (409) while an expired key belongs to the team: a new expires_at would revive it teamless", async () => {
    const team = (
      await call("POST", "/internal/teams", {
        body: { name: "expiring", allowed_models: ["mock-embedding"], budget_usd_per_month: 5 },
      })
    ).body;
    const key = (
      await call("POST", "/internal/keys", {
        body: { name: "soon", team_id: team.id, scopes: ["models"], expires_at: new Date(Date.now() + 60_000).toISOString() },
      })
    ).body;
    // The key expires (moved into the past directly: waiting for it would only slow the test down).
    await proxy.pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [key.id]);
    expect((await call("GET", `/internal/keys/${key.id}`)).body.status).toBe("expired");
    const auditBefore = (await call("GET", `/internal/audit?target_id=${team.id}`)).body.data.length;

    const refused = await call("DELETE", `/internal/teams/${team.id}`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ type: "invalid_request_error", code: "team_has_active_keys" });
    expect(refused.body.error.message).toContain("1 key that is not revoked");
    expect(refused.body.error.message).toContain("1 expired");
    expect(refused.body.error.message).toContain(key.id);
    expect(refused.body.error.message).toMatch(/revoke it first/);
    // Nothing changed: the team, the key's membership and the audit log are as they were.
    expect((await call("GET", `/internal/teams/${team.id}`)).status).toBe(200);
    expect((await call("GET", `/internal/keys/${key.id}`)).body.team_id).toBe(team.id);
    expect((await call("GET", `/internal/audit?target_id=${team.id}`)).body.data).toHaveLength(auditBefore);

    // Extending the expiry revives the key inside its team, under the team's models.
    const revived = await call("PATCH", `/internal/keys/${key.id}`, {
      body: { expires_at: new Date(Date.now() + 60_000).toISOString() },
    });
    expect(revived.body).toMatchObject({ status: "active", team_id: team.id });
    const listed = (await (await models(key.key)).json()) as { data: Array<{ id: string }> };
    expect(listed.data.map((m) => m.id)).toEqual(["mock-embedding"]);

    await call("POST", `/internal/keys/${key.id}/revoke`);
    expect((await call("DELETE", `/internal/teams/${team.id}`)).status).toBe(200);
  });

  it("a PATCH that changes nothing answers the stored team, keeps updated_at and records no event", async () => {
    const team = (
      await call("POST", "/internal/teams", {
        body: { name: "steady", allowed_models: ["a", "b"], budget_usd_per_month: 12.5, tokens_per_minute: 0 },
      })
    ).body;
    const events = async () => (await call("GET", `/internal/audit?target_id=${team.id}`)).body.data.map((e: any) => e.action);
    expect(await events()).toEqual(["team.created"]);

    for (const body of [
      {},
      { name: "steady" },
      { name: "  steady  ", allowed_models: ["a", "b", "a"], budget_usd_per_month: 12.5, tokens_per_minute: 0 },
      { requests_per_minute: null, tokens_per_day: null },
    ]) {
      const same = await call("PATCH", `/internal/teams/${team.id}`, { body });
      expect(same.status, JSON.stringify(body)).toBe(200);
      expect(same.body, JSON.stringify(body)).toEqual(team);
    }
    expect(await events()).toEqual(["team.created"]);

    // A real change still records one event naming only the changed field.
    const changed = await call("PATCH", `/internal/teams/${team.id}`, { body: { name: "steady", tokens_per_minute: 5 } });
    expect(changed.body).toMatchObject({ name: "steady", tokens_per_minute: 5 });
    const log = (await call("GET", `/internal/audit?target_id=${team.id}`)).body.data;
    expect(log.map((e: any) => e.action)).toEqual(["team.updated", "team.created"]);
    expect(log[0].changes).toEqual({ tokens_per_minute: { before: 0, after: 5 } });
  });
});

describe("admin API: keys", () => {
  it("create shows the key once; the key works; lists never show the key or its hash", async () => {
    const team = (await call("POST", "/internal/teams", { body: { name: "apps" } })).body;
    const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    const created = await call("POST", "/internal/keys", {
      body: {
        name: "svc",
        team_id: team.id,
        scopes: ["models", "chat", "rag:handbook", "rag:*", "models"],
        expires_at: expiresAt,
        tokens_per_day: 0,
      },
    });
    expect(created.status).toBe(201);
    const k = created.body;
    expect(k).toMatchObject({
      object: "api_key",
      name: "svc",
      team_id: team.id,
      scopes: ["models", "chat", "rag:handbook", "rag:*"],
      status: "active",
      expires_at: expiresAt,
      revoked_at: null,
      requests_per_minute: null,
      tokens_per_minute: null,
      tokens_per_day: 0,
    });
    expect(k.key).toMatch(/^sk-llmp-[A-Za-z0-9_-]{43}$/);
    expect(k.key.startsWith(k.prefix)).toBe(true);
    expect((await models(k.key)).status).toBe(200);

    const listText = JSON.stringify((await call("GET", "/internal/keys")).body);
    expect(listText).toContain(k.id);
    expect(listText).not.toContain(k.key);
    expect(listText).not.toContain(hashApiKey(k.key));
    const one = await call("GET", `/internal/keys/${k.id}`);
    expect(one.body.key).toBeUndefined();
    expect(JSON.stringify(one.body)).not.toContain(hashApiKey(k.key));

    const defaults = (await call("POST", "/internal/keys", { body: { name: "plain" } })).body;
    expect(defaults).toMatchObject({ scopes: ["chat", "embeddings", "models"], team_id: null, expires_at: null });
  });

  it("the key list comes a page at a time (limit, next_cursor), oldest first, optionally of one team", async () => {
    const team = (await call("POST", "/internal/teams", { body: { name: "paged" } })).body;
    for (let i = 0; i < 5; i++)
      await call("POST", "/internal/keys", { body: { name: `paged-${i}`, ...(i % 2 ? {} : { team_id: team.id }) } });
    const all = (await call("GET", "/internal/keys")).body;
    expect(all.next_cursor).toBeNull();
    const walked: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: any } = await call(
        "GET",
        `/internal/keys?limit=2${cursor ? `&cursor=${cursor}` : ""}`,
      );
      expect(page.status).toBe(200);
      expect(page.body.data.length).toBeLessThanOrEqual(2);
      walked.push(...page.body.data.map((k: { id: string }) => k.id));
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor);
    // Every key once, in the order of the whole list; no page past the last.
    expect(walked).toEqual(all.data.map((k: { id: string }) => k.id));
    expect(pages).toBe(Math.ceil(all.data.length / 2));
    const ofTeam = (await call("GET", `/internal/keys?team_id=${team.id}`)).body.data;
    expect(ofTeam.map((k: { name: string }) => k.name)).toEqual(["paged-0", "paged-2", "paged-4"]);
    for (const [query, param] of [
      ["limit=0", "limit"],
      ["limit=1001", "limit"],
      ["cursor=bm9wZQ", "cursor"],
      ["team_id=nope", "team_id"],
      ["offset=2", "offset"],
    ]) {
      const bad = await call("GET", `/internal/keys?${query}`);
      expect(bad.status, query).toBe(400);
      expect(bad.body.error.param).toBe(param);
    }
  });

  it("validation: scopes, expiry in the past, unknown team", async () => {
    const badScope = await call("POST", "/internal/keys", { body: { name: "x", scopes: ["chat", "admin"] } });
    expect(badScope.status).toBe(400);
    expect(badScope.body.error.param).toBe("scopes.1");
    expect((await call("POST", "/internal/keys", { body: { name: "x", scopes: ["rag:"] } })).status).toBe(400);
    expect((await call("POST", "/internal/keys", { body: { name: "x", scopes: [] } })).status).toBe(400);

    const past = await call("POST", "/internal/keys", { body: { name: "x", expires_at: "2001-01-01T00:00:00Z" } });
    expect(past.status).toBe(400);
    expect(past.body.error.param).toBe("expires_at");
    expect(past.body.error.message).toContain("future");
    const notDate = await call("POST", "/internal/keys", { body: { name: "x", expires_at: "tomorrow" } });
    expect(notDate.body.error.param).toBe("expires_at");

    const team = await call("POST", "/internal/keys", { body: { name: "x", team_id: crypto.randomUUID() } });
    expect(team.status).toBe(400);
    expect(team.body.error.param).toBe("team_id");
    expect((await call("POST", "/internal/keys", { body: { name: "x", team_id: "abc" } })).body.error.param).toBe(
      "team_id",
    );
  });

  it("PATCH changes scopes, expiry and limits, and takes effect at once", async () => {
    const k = (await call("POST", "/internal/keys", { body: { name: "p", scopes: ["models"], tokens_per_minute: 5 } }))
      .body;
    expect((await models(k.key)).status).toBe(200);
    const p = await call("PATCH", `/internal/keys/${k.id}`, {
      body: { scopes: ["chat"], requests_per_minute: 10, name: "renamed" },
    });
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ name: "renamed", scopes: ["chat"], requests_per_minute: 10, tokens_per_minute: 5 });
    // The auth cache held the old scopes; the admin API evicted it.
    expect((await models(k.key)).status).toBe(403);

    const cleared = await call("PATCH", `/internal/keys/${k.id}`, { body: { tokens_per_minute: null, expires_at: null } });
    expect(cleared.body).toMatchObject({ tokens_per_minute: null, requests_per_minute: 10, expires_at: null });
    const neg = await call("PATCH", `/internal/keys/${k.id}`, { body: { tokens_per_day: -5 } });
    expect(neg.status).toBe(400);
    expect(neg.body.error.param).toBe("tokens_per_day");
    expect((await call("PATCH", `/internal/keys/${k.id}`, { body: { team_id: null } })).body.error.param).toBe("team_id");
    expect((await call("PATCH", `/internal/keys/${crypto.randomUUID()}`, { body: { name: "z" } })).status).toBe(404);
  });

  it("a PATCH that changes nothing answers the stored key, keeps updated_at and records no event", async () => {
    const team = (await call("POST", "/internal/teams", { body: { name: "keys-steady" } })).body;
    const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    const fields = {
      name: "steady-key",
      scopes: ["chat", "models"],
      expires_at: expiresAt,
      allowed_models: ["mock-chat"],
      budget_usd_per_month: 0.25,
      requests_per_minute: 10,
      tokens_per_minute: null,
      tokens_per_day: 0,
    };
    const created = (await call("POST", "/internal/keys", { body: { ...fields, team_id: team.id } })).body;
    const { key: _secret, ...stored } = created;
    const updatedAt = async () =>
      (await proxy.pool.query("SELECT updated_at FROM api_keys WHERE id = $1", [created.id])).rows[0].updated_at.getTime();
    const events = async () => (await call("GET", `/internal/audit?target_id=${created.id}`)).body.data.map((e: any) => e.action);
    const since = await updatedAt();

    for (const body of [{}, fields, { scopes: ["chat", "models", "chat"], name: " steady-key " }, { expires_at: expiresAt.replace("Z", "+00:00") }]) {
      const same = await call("PATCH", `/internal/keys/${created.id}`, { body });
      expect(same.status, JSON.stringify(body)).toBe(200);
      expect(same.body, JSON.stringify(body)).toEqual(stored);
    }
    expect(await events()).toEqual(["key.created"]);
    expect(await updatedAt()).toBe(since);

    const changed = await call("PATCH", `/internal/keys/${created.id}`, { body: { ...fields, tokens_per_day: 100 } });
    expect(changed.body).toMatchObject({ tokens_per_day: 100, name: "steady-key" });
    const log = (await call("GET", `/internal/audit?target_id=${created.id}`)).body.data;
    expect(log.map((e: any) => e.action)).toEqual(["key.updated", "key.created"]);
    expect(log[0].changes).toEqual({ tokens_per_day: { before: 0, after: 100 } });
    expect(await updatedAt()).toBeGreaterThan(since);
  });

  it("revoke: the key stops working at once; revoking twice is harmless", async () => {
    const k = (await call("POST", "/internal/keys", { body: { name: "r", scopes: ["models"] } })).body;
    expect((await models(k.key)).status).toBe(200);
    const r = await call("POST", `/internal/keys/${k.id}/revoke`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: k.id, status: "revoked" });
    expect(r.body.revoked_at).not.toBeNull();
    const after = await models(k.key);
    expect(after.status).toBe(401);
    expect(((await after.json()) as any).error.code).toBe("revoked_api_key");
    expect((await call("POST", `/internal/keys/${k.id}/revoke`)).body.revoked_at).toBe(r.body.revoked_at);
    expect((await call("POST", `/internal/keys/${crypto.randomUUID()}/revoke`)).status).toBe(404);
    expect((await call("POST", `/internal/keys/bad/revoke`)).status).toBe(400);
  });

  it("rotate: a new key with the same settings; the old one stops working at once", async () => {
    const team = (await call("POST", "/internal/teams", { body: { name: "rot" } })).body;
    const old = (
      await call("POST", "/internal/keys", {
        body: { name: "rot", team_id: team.id, scopes: ["models"], requests_per_minute: 3 },
      })
    ).body;
    expect((await models(old.key)).status).toBe(200);
    const rotated = await call("POST", `/internal/keys/${old.id}/rotate`);
    expect(rotated.status).toBe(201);
    expect(rotated.body).toMatchObject({
      name: "rot",
      team_id: team.id,
      scopes: ["models"],
      requests_per_minute: 3,
      rotated_from: old.id,
      status: "active",
    });
    expect(rotated.body.id).not.toBe(old.id);
    expect(rotated.body.key).not.toBe(old.key);
    expect((await models(old.key)).status).toBe(401);
    expect((await models(rotated.body.key)).status).toBe(200);
    expect((await call("GET", `/internal/keys/${old.id}`)).body.status).toBe("revoked");

    const again = await call("POST", `/internal/keys/${old.id}/rotate`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("key_revoked");
    expect((await call("POST", `/internal/keys/${crypto.randomUUID()}/rotate`)).status).toBe(404);
  });
});

describe("admin API: usage report", () => {
  it("totals by key, team, model and day within [from, to)", async () => {
    const keyA = crypto.randomUUID();
    const teamA = crypto.randomUUID();
    const base = Date.parse("2031-03-01T10:00:00Z");
    const row = (minutes: number, over: Partial<UsageRow>): UsageRow =>
      usageRow({
        createdAt: new Date(base + minutes * 60_000),
        keyId: keyA,
        teamId: teamA,
        requestedModel: "gpt-a",
        servedModel: "gpt-a",
        provider: "openai",
        promptTokens: 100,
        completionTokens: 20,
        latencyMs: 40,
        ...over,
      });
    [
      row(0, { cachedTokens: 40, cacheWriteTokens: 30, costUsd: 0.0012 }),
      row(1, { cacheHit: true, promptTokens: 0, completionTokens: 0, costUsd: 0 }),
      row(2, { status: 429, errorCode: "rate_limit_exceeded", promptTokens: 0, completionTokens: 0, costUsd: 0 }),
      // Served without a configured price: its cost is unknown.
      row(60 * 24, { servedModel: "gpt-b", keyId: null, teamId: null, route: "messages", provider: "claude" }),
    ].forEach((r) => proxy.deps.usageSink.record(r));
    await proxy.deps.usageSink.flush();

    const q = "from=2031-03-01T00:00:00Z&to=2031-03-03T00:00:00Z";
    const byKey = await call("GET", `/internal/usage?${q}&group_by=key`);
    expect(byKey.status).toBe(200);
    expect(byKey.body).toMatchObject({ object: "list", group_by: "key", from: "2031-03-01T00:00:00.000Z" });
    expect(byKey.body.data).toEqual([
      { group: keyA, name: null, requests: 3, prompt_tokens: 100, completion_tokens: 20, total_tokens: 120, cached_tokens: 40, cache_write_tokens: 30, cost_usd: 0.0012, unpriced_requests: 0, errors: 1, cache_hits: 1 },
      { group: null, name: null, requests: 1, prompt_tokens: 100, completion_tokens: 20, total_tokens: 120, cached_tokens: 0, cache_write_tokens: 0, cost_usd: null, unpriced_requests: 1, errors: 0, cache_hits: 0 },
    ]);
    const byModel = await call("GET", `/internal/usage?${q}&group_by=model`);
    expect(byModel.body.data.map((r: any) => [r.group, r.requests])).toEqual([
      ["gpt-a", 3],
      ["gpt-b", 1],
    ]);
    const byDay = await call("GET", `/internal/usage?from=2031-03-01&to=2031-03-03&group_by=day`);
    expect(byDay.body.data.map((r: any) => [r.group, r.requests])).toEqual([
      ["2031-03-01", 3],
      ["2031-03-02", 1],
    ]);
    const byRoute = await call("GET", `/internal/usage?${q}&group_by=route`);
    expect(byRoute.body.data.map((r: any) => [r.group, r.requests])).toEqual([
      ["chat", 3],
      ["messages", 1],
    ]);
    const byProvider = await call("GET", `/internal/usage?${q}&group_by=provider`);
    expect(byProvider.body.data.map((r: any) => [r.group, r.requests])).toEqual([
      ["claude", 1],
      ["openai", 3],
    ]);
    const byTeam = await call("GET", `/internal/usage?${q}&group_by=team`);
    expect(byTeam.body.data[0]).toMatchObject({ group: teamA, requests: 3 });

    // Filters, ordering and a limit reach the report; the answer says what it was asked.
    const top = await call("GET", `/internal/usage?${q}&group_by=model&team_id=${teamA}&order_by=requests&limit=1`);
    expect(top.status).toBe(200);
    expect(top.body).toMatchObject({ group_by: "model", order_by: "requests", filter: { team_id: teamA } });
    expect(top.body.data.map((r: any) => [r.group, r.requests])).toEqual([["gpt-a", 3]]);
    const month = await call("GET", `/internal/usage?${q}&group_by=month&model=gpt-b`);
    expect(month.body.data.map((r: any) => [r.group, r.requests])).toEqual([["2031-03", 1]]);

    // A window that excludes everything.
    const empty = await call("GET", "/internal/usage?from=2031-04-01T00:00:00Z&to=2031-04-02T00:00:00Z");
    expect(empty.body.data).toEqual([]);
  });

  it("rejects a bad group_by, bad dates and from >= to", async () => {
    const g = await call("GET", "/internal/usage?group_by=colour");
    expect(g.status).toBe(400);
    expect(g.body.error.param).toBe("group_by");
    const d = await call("GET", "/internal/usage?from=yesterday");
    expect(d.status).toBe(400);
    expect(d.body.error.param).toBe("from");
    const order = await call("GET", "/internal/usage?from=2031-03-02&to=2031-03-01");
    expect(order.status).toBe(400);
    expect((await call("GET", "/internal/usage?group_by=key&group_by=team")).status).toBe(400);
    for (const [query, param] of [
      ["order_by=size", "order_by"],
      ["limit=0", "limit"],
      ["limit=10001", "limit"],
      ["limit=2.5", "limit"],
      ["key_id=abc", "key_id"],
      ["team_id=1%3B%20DROP%20TABLE%20usage", "team_id"],
      ["model=gpt%00x", "model"],
      ["provider=a%0Ab", "provider"],
    ]) {
      const bad = await call("GET", `/internal/usage?${query}`);
      expect(bad.status, query).toBe(400);
      expect(bad.body.error).toMatchObject({ type: "invalid_request_error", param });
    }
  });
});
