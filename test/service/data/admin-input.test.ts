/**
 * Admin API input that PostgreSQL would refuse (a 500 before): NUL and other control characters or unpaired
 * surrogates in stored text, expiry instants past PostgreSQL's parseable range, impossible dates in an audit cursor.
 * Each is a 400 naming the field, and a rejected request changes nothing (no row, no audit event).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type TestProxy } from "../../helpers/proxy";

let proxy: TestProxy;

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; raw?: string } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { authorization: `Bearer ${proxy.masterKey}` };
  const payload = opts.raw ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined);
  if (payload !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${proxy.url}${path}`, { method, headers, body: payload });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Row counts of everything the admin API writes. */
async function counts(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of ["teams", "api_keys", "audit_events"]) {
    const { rows } = await proxy.pool.query(`SELECT count(*)::int AS n FROM ${table}`);
    out[table] = rows[0].n as number;
  }
  return out;
}

function expect400(r: { status: number; body: any }, param: string, label: string) {
  expect(r.status, `${label}: ${JSON.stringify(r.body)}`).toBe(400);
  expect(r.body.error, label).toMatchObject({ type: "invalid_request_error", code: "invalid_value", param });
  expect(r.body.error.message, label).toContain(param);
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64url");

beforeAll(async () => {
  proxy = await startProxy();
});
afterAll(async () => {
  await proxy?.close();
});

/** Texts PostgreSQL cannot store as given (NUL) or that are not printable names. */
const BAD_TEXTS: Array<[string, string]> = [
  ["a\u0000b", "NUL"],
  ["\u0000", "only NUL"],
  ["tab\u0007bell", "BEL control character"],
  ["line\nbreak", "newline"],
  ["del\u007f", "DEL"],
  ["x\ud800y", "unpaired high surrogate"],
  ["\udc00", "unpaired low surrogate"],
];

describe("admin API: text fields are printable, well-formed text", () => {
  it("POST /internal/teams: a bad `name` or `allowed_models` entry → 400 naming the field; nothing is stored", async () => {
    const before = await counts();
    for (const [text, label] of BAD_TEXTS) {
      expect400(await call("POST", "/internal/teams", { body: { name: text } }), "name", `name ${label}`);
      expect400(
        await call("POST", "/internal/teams", { body: { name: "models", allowed_models: ["gpt-4o", text] } }),
        "allowed_models.1",
        `allowed_models ${label}`,
      );
    }
    const nul = await call("POST", "/internal/teams", { body: { name: "a\u0000b" } });
    expect(nul.body.error.message).toMatch(/control characters/);
    expect(await counts()).toEqual(before);
  });

  it("PATCH /internal/teams/:id: a bad `name` or `allowed_models` entry → 400; the team is unchanged", async () => {
    const team = await call("POST", "/internal/teams", { body: { name: "patch-me", allowed_models: ["m1"] } });
    expect(team.status).toBe(201);
    const before = await counts();
    for (const [text, label] of BAD_TEXTS) {
      expect400(await call("PATCH", `/internal/teams/${team.body.id}`, { body: { name: text } }), "name", label);
      expect400(
        await call("PATCH", `/internal/teams/${team.body.id}`, { body: { allowed_models: [text] } }),
        "allowed_models.0",
        label,
      );
    }
    expect(await counts()).toEqual(before);
    const now = await call("GET", `/internal/teams/${team.body.id}`);
    expect(now.body).toMatchObject({ name: "patch-me", allowed_models: ["m1"], updated_at: team.body.updated_at });
  });

  it("POST /internal/keys: a bad `name` or `allowed_models` entry → 400; no key is created", async () => {
    const before = await counts();
    for (const [text, label] of BAD_TEXTS) {
      expect400(await call("POST", "/internal/keys", { body: { name: text } }), "name", label);
      expect400(
        await call("POST", "/internal/keys", { body: { name: "k", allowed_models: [text] } }),
        "allowed_models.0",
        label,
      );
    }
    expect(await counts()).toEqual(before);
  });

  it("PATCH /internal/keys/:id: a bad `name` or `allowed_models` entry → 400; the key is unchanged", async () => {
    const key = await call("POST", "/internal/keys", { body: { name: "key-patch", allowed_models: ["m1"] } });
    expect(key.status).toBe(201);
    const before = await counts();
    for (const [text, label] of BAD_TEXTS) {
      expect400(await call("PATCH", `/internal/keys/${key.body.id}`, { body: { name: text } }), "name", label);
      expect400(
        await call("PATCH", `/internal/keys/${key.body.id}`, { body: { allowed_models: ["ok", text] } }),
        "allowed_models.1",
        label,
      );
    }
    expect(await counts()).toEqual(before);
    const now = await call("GET", `/internal/keys/${key.body.id}`);
    expect(now.body).toMatchObject({ name: "key-patch", allowed_models: ["m1"] });
  });

  it("ordinary Unicode names and model names are still accepted (accents, CJK, emoji, surrounding spaces)", async () => {
    const team = await call("POST", "/internal/teams", {
      body: { name: "  Équipe 研究 🚀  ", allowed_models: ["modèle-🚀"] },
    });
    expect(team.status).toBe(201);
    expect(team.body).toMatchObject({ name: "Équipe 研究 🚀", allowed_models: ["modèle-🚀"] });
    const key = await call("POST", "/internal/keys", { body: { name: "clé 🔑", allowed_models: ["模型"] } });
    expect(key.status).toBe(201);
    expect(key.body).toMatchObject({ name: "clé 🔑", allowed_models: ["模型"] });
  });
});

describe("admin API: expires_at within PostgreSQL's range", () => {
  const TOO_LATE = [
    "9999-12-31T23:59:59-14:00", // 10000-01-01T13:59:59Z
    "9999-12-31T23:59:59.001Z",
    "9999-12-31T23:00:00-01:00",
  ];

  it("POST /internal/keys with an instant after 9999-12-31T23:59:59Z → 400; no key is created", async () => {
    const before = await counts();
    for (const expires_at of TOO_LATE) {
      const r = await call("POST", "/internal/keys", { body: { name: "k", expires_at } });
      expect400(r, "expires_at", expires_at);
      expect(r.body.error.message).toContain("9999-12-31T23:59:59Z");
    }
    expect(await counts()).toEqual(before);
  });

  it("PATCH /internal/keys/:id with such an instant → 400; the key keeps its expiry", async () => {
    const key = await call("POST", "/internal/keys", { body: { name: "k", expires_at: "2999-01-01T00:00:00Z" } });
    expect(key.status).toBe(201);
    const before = await counts();
    for (const expires_at of TOO_LATE) {
      expect400(await call("PATCH", `/internal/keys/${key.body.id}`, { body: { expires_at } }), "expires_at", expires_at);
    }
    expect(await counts()).toEqual(before);
    expect((await call("GET", `/internal/keys/${key.body.id}`)).body.expires_at).toBe("2999-01-01T00:00:00.000Z");
  });

  it("the last accepted instant is 9999-12-31T23:59:59Z (also given with a zone offset)", async () => {
    const created = await call("POST", "/internal/keys", { body: { name: "k", expires_at: "9999-12-31T23:59:59Z" } });
    expect(created.status).toBe(201);
    expect(created.body.expires_at).toBe("9999-12-31T23:59:59.000Z");
    const patched = await call("PATCH", `/internal/keys/${created.body.id}`, {
      body: { expires_at: "9999-12-31T23:59:59+14:00" },
    });
    expect(patched.status).toBe(200);
    expect(patched.body.expires_at).toBe("9999-12-31T09:59:59.000Z");
  });
});

describe("admin API: audit query parameters", () => {
  it("a cursor naming an impossible date (Feb 30, year 0, hour 24) → 400 invalid cursor", async () => {
    const id = "c0f801a2-8f4f-43bf-8c48-8c4b7965aace";
    for (const at of [
      "2026-02-30T23:00:00.000000Z",
      "2025-02-29T00:00:00.000000Z",
      "2026-04-31T00:00:00.000000Z",
      "0000-01-01T00:00:00.000000Z",
      "2026-01-01T24:00:00.000000Z",
      "2026-13-01T00:00:00.000000Z",
    ]) {
      const r = await call("GET", `/internal/audit?cursor=${b64(`${at}|${id}`)}`);
      expect400(r, "cursor", at);
    }
  });

  it("a real cursor still pages through the events (including a leap day's form)", async () => {
    for (let i = 0; i < 3; i++) expect((await call("POST", "/internal/teams", { body: { name: `page-${i}` } })).status).toBe(201);
    const first = await call("GET", "/internal/audit?action=team.created&limit=2");
    expect(first.status).toBe(200);
    expect(first.body.data).toHaveLength(2);
    const second = await call("GET", `/internal/audit?action=team.created&limit=2&cursor=${first.body.next_cursor}`);
    expect(second.status).toBe(200);
    expect(second.body.data.length).toBeGreaterThanOrEqual(1);
    const seen = new Set([...first.body.data, ...second.body.data].map((e: { id: string }) => e.id));
    expect(seen.size).toBe(first.body.data.length + second.body.data.length);
    const leap = await call(
      "GET",
      `/internal/audit?cursor=${b64("2028-02-29T12:00:00.000000Z|c0f801a2-8f4f-43bf-8c48-8c4b7965aace")}`,
    );
    expect(leap.status).toBe(200);
  });

  it("target_id with NUL or another control character → 400; ordinary text is matched", async () => {
    for (const raw of ["%00", "a%00b", "%01", "x%0Ay", "%7F"]) {
      expect400(await call("GET", `/internal/audit?target_id=${raw}`), "target_id", raw);
    }
    const ok = await call("GET", `/internal/audit?target_id=${encodeURIComponent("docs/guide é.md")}`);
    expect(ok.status).toBe(200);
    expect(ok.body.data).toEqual([]);
  });

  it("from/to at the ends of the accepted date range answer 200, not a database error", async () => {
    for (const q of [
      "from=0000-01-01",
      "from=0000-01-01T00:00:00%2B14:00",
      "to=9999-12-31T23:59:59-14:00",
      "from=0001-01-01&to=9999-12-31",
    ]) {
      expect((await call("GET", `/internal/audit?${q}`)).status, q).toBe(200);
      expect((await call("GET", `/internal/usage?${q}`)).status, q).toBe(200);
    }
  });
});

describe("admin API: GET endpoints reject query parameters they do not take", () => {
  const AUDIT = ["from", "to", "action", "target_id", "limit", "cursor"];
  const USAGE = ["from", "to", "group_by", "key_id", "team_id", "model", "route", "provider", "order_by", "limit"];

  it("a misspelled or unsupported parameter → 400 unknown_parameter naming it and the accepted ones", async () => {
    const team = await call("POST", "/internal/teams", { body: { name: "query-team" } });
    const key = await call("POST", "/internal/keys", { body: { name: "query-key" } });
    const before = await counts();
    const cases: Array<[string, string, string[]]> = [
      ["/internal/usage?grup_by=team&form=2020-01-01", "grup_by", USAGE],
      ["/internal/usage?group_by=team&form=2020-01-01", "form", USAGE],
      ["/internal/usage?from=2020-01-01&key=abc", "key", USAGE],
      ["/internal/audit?acton=key.created", "acton", AUDIT],
      ["/internal/audit?limit=5&page=2", "page", AUDIT],
      ["/internal/keys?team=nonsense", "team", ["limit", "cursor", "team_id"]],
      [`/internal/keys/${key.body.id}?expand=team`, "expand", []],
      ["/internal/teams?name=query-team", "name", []],
      [`/internal/teams/${team.body.id}?verbose`, "verbose", []],
    ];
    for (const [path, param, accepted] of cases) {
      const r = await call("GET", path);
      expect(r.status, path).toBe(400);
      expect(r.body.error, path).toMatchObject({ type: "invalid_request_error", code: "unknown_parameter", param });
      expect(r.body.error.message, path).toContain(`\`${param}\``);
      for (const name of accepted) expect(r.body.error.message, path).toContain(name);
      if (!accepted.length) expect(r.body.error.message, path).toContain("no query parameters");
    }
    // A misspelling is reported before a bad value of a known parameter.
    const both = await call("GET", "/internal/usage?group_by=colour&grup_by=team");
    expect(both.body.error).toMatchObject({ code: "unknown_parameter", param: "grup_by" });
    expect(await counts()).toEqual(before);
  });

  it("every documented parameter is still accepted; a known filter with a bad value is a 400 naming it", async () => {
    const team = await call("POST", "/internal/teams", { body: { name: "documented" } });
    const id = team.body.id as string;
    const usage = await call(
      "GET",
      `/internal/usage?from=2031-01-01&to=2031-01-02&group_by=model&key_id=${id}&team_id=${id}&model=m&route=chat` +
        "&provider=p&order_by=requests&limit=5",
    );
    expect(usage.status, JSON.stringify(usage.body)).toBe(200);
    const page = await call("GET", "/internal/audit?action=team.created&limit=1");
    expect(page.status).toBe(200);
    expect(page.body.next_cursor).not.toBeNull();
    const audit = await call(
      "GET",
      `/internal/audit?from=2020-01-01&to=2999-01-01&action=team.created&target_id=${id}&limit=1` +
        `&cursor=${page.body.next_cursor}`,
    );
    expect(audit.status, JSON.stringify(audit.body)).toBe(200);
    for (const path of ["/internal/teams", `/internal/teams/${id}`, "/internal/keys"]) {
      expect((await call("GET", path)).status, path).toBe(200);
    }

    for (const [path, param] of [
      ["/internal/usage?team_id=nonsense", "team_id"],
      ["/internal/usage?key_id=nonsense", "key_id"],
      ["/internal/audit?action=nonsense", "action"],
      ["/internal/audit?limit=many", "limit"],
    ]) {
      expect400(await call("GET", path), param, path);
    }
  });
});
