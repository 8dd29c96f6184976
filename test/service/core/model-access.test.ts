/**
 * Model access: a key or a team may be limited to a list of client-facing models (`allowed_models`); a request must
 * pass both lists. Outside them: 403 `model_not_allowed` naming the model, nothing sent upstream, a usage row; the
 * models list shows only what the key may use. Set and cleared through the admin API, effective at once for keys.
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

describe("allowed_models on keys and teams", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [
        { name: "small", provider: "fake" },
        { name: "large", provider: "fake" },
        { name: "premium", provider: "fake", fallbacks: ["small"] },
        { name: "embed", provider: "fake", kind: "embedding" } as never,
      ]),
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  async function admin(method: string, path: string, body?: unknown) {
    const res = await fetch(`${proxy.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${proxy.masterKey}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json()) as any };
  }

  const client = (key: string) => new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
  const ask = (key: string, model: string) =>
    client(key)
      .chat.completions.create({ model, messages: [{ role: "user", content: "hi" }] })
      .then(
        () => 200,
        (e: unknown) => e,
      );

  it("a key limited to some models gets 403 model_not_allowed for the others, and nothing is sent", async () => {
    const created = await admin("POST", "/internal/keys", { name: "k", allowed_models: ["small", "embed"] });
    expect(created.status).toBe(201);
    expect(created.body.allowed_models).toEqual(["small", "embed"]);
    const key = created.body.key as string;
    expect(await ask(key, "small")).toBe(200);

    const sent = upstream.requests.length;
    const denied = await ask(key, "large");
    expect(denied).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((denied as InstanceType<typeof OpenAI.PermissionDeniedError>).error).toMatchObject({
      code: "model_not_allowed",
      param: "model",
      type: "permission_error",
    });
    expect(upstream.requests.length).toBe(sent);
    const rows = await proxy.usageRows();
    expect(rows.at(-1)).toMatchObject({
      requested_model: "large",
      status: 403,
      error_code: "model_not_allowed",
    });

    // Embeddings obey the same list.
    const emb = await client(key).embeddings.create({ model: "embed", input: "x" });
    expect(emb.data).toHaveLength(1);
    await expect(client(key).embeddings.create({ model: "large", input: "x" })).rejects.toBeInstanceOf(
      OpenAI.NotFoundError, // "large" is a chat model: unknown as an embedding model, before any access check
    );
  });

  it("the models list and GET /v1/models/{id} show only what the key may use", async () => {
    const { body } = await admin("POST", "/internal/keys", { name: "lister", allowed_models: ["large"] });
    const models = await client(body.key).models.list();
    expect(models.data.map((m) => m.id)).toEqual(["large"]);
    await expect(client(body.key).models.retrieve("small")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    expect((await client(body.key).models.retrieve("large")).id).toBe("large");
  });

  it("a team's list applies to its keys; a key's own list narrows it further", async () => {
    const team = await admin("POST", "/internal/teams", {
      name: "interns",
      allowed_models: ["small", "premium"],
    });
    expect(team.status).toBe(201);
    expect(team.body.allowed_models).toEqual(["small", "premium"]);
    const open = await admin("POST", "/internal/keys", { name: "any", team_id: team.body.id });
    const narrow = await admin("POST", "/internal/keys", {
      name: "narrow",
      team_id: team.body.id,
      allowed_models: ["premium", "large"],
    });
    expect(await ask(open.body.key, "premium")).toBe(200);
    expect(await ask(open.body.key, "large")).toBeInstanceOf(OpenAI.PermissionDeniedError);
    // The key lists large, but its team does not: both lists must allow a model.
    expect(await ask(narrow.body.key, "large")).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(await ask(narrow.body.key, "small")).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(await ask(narrow.body.key, "premium")).toBe(200);
  });

  it("PATCH changes a key's list at once; null allows every model again; rotation keeps the list", async () => {
    const created = await admin("POST", "/internal/keys", { name: "p", allowed_models: ["small"] });
    const key = created.body.key as string;
    expect(await ask(key, "large")).toBeInstanceOf(OpenAI.PermissionDeniedError);
    const patched = await admin("PATCH", `/internal/keys/${created.body.id}`, { allowed_models: null });
    expect(patched.body.allowed_models).toBeNull();
    expect(await ask(key, "large")).toBe(200);
    await admin("PATCH", `/internal/keys/${created.body.id}`, { allowed_models: ["large"] });
    expect(await ask(key, "small")).toBeInstanceOf(OpenAI.PermissionDeniedError);

    const rotated = await admin("POST", `/internal/keys/${created.body.id}/rotate`);
    expect(rotated.body.allowed_models).toEqual(["large"]);
    expect(await ask(rotated.body.key, "small")).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(await ask(rotated.body.key, "large")).toBe(200);

    // The change is audited with its before and after.
    const audit = await admin("GET", `/internal/audit?target_id=${created.body.id}&action=key.updated`);
    expect(audit.body.data.map((e: any) => e.changes.allowed_models)).toEqual([
      { before: null, after: ["large"] },
      { before: ["small"], after: null },
    ]);
  });

  it("a team's change (models or limits) applies to its keys at once, not after the key cache expires", async () => {
    const team = await admin("POST", "/internal/teams", { name: "movers", allowed_models: ["small"] });
    const { body } = await admin("POST", "/internal/keys", { name: "mover", team_id: team.body.id });
    expect(await ask(body.key, "large")).toBeInstanceOf(OpenAI.PermissionDeniedError); // cached now
    await admin("PATCH", `/internal/teams/${team.body.id}`, { allowed_models: ["small", "large"] });
    expect(await ask(body.key, "large")).toBe(200);
    await admin("PATCH", `/internal/teams/${team.body.id}`, { requests_per_minute: 0 });
    expect(await ask(body.key, "large")).toBeInstanceOf(OpenAI.RateLimitError);
  });

  it("count_tokens obeys the same lists", async () => {
    const { body } = await admin("POST", "/internal/keys", { name: "counter", allowed_models: ["small"] });
    const count = (model: string) =>
      fetch(`${proxy.url}/v1/messages/count_tokens`, {
        method: "POST",
        headers: { "x-api-key": body.key, "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
      });
    expect((await count("small")).status).toBe(200);
    const denied = await count("large");
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as any).error.type).toBe("permission_error");
  });

  it("bad lists are 400s naming the field", async () => {
    for (const bad of ["small", [""], [42], Array.from({ length: 1001 }, (_, i) => `m${i}`)]) {
      const res = await admin("POST", "/internal/keys", { name: "bad", allowed_models: bad });
      expect(res.status).toBe(400);
      expect(res.body.error.param).toMatch(/^allowed_models/);
    }
    const res = await admin("POST", "/internal/teams", { name: "bad-team", allowed_models: "small" });
    expect(res.status).toBe(400);
    expect(res.body.error.param).toBe("allowed_models");
  });
});
