import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, TEST_MASTER_KEY, upstreamConfig, type TestProxy } from "../../helpers/proxy";
import { uuidv7Time } from "../../../service/lib/uuid7";

describe("bad input gets the right 4xx in the OpenAI error shape, and the worker stays up", () => {
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    // No config file: the built-in mock deployments (mock-chat, mock-embedding).
    proxy = await startProxy({});
    key = (await proxy.createKey({ scopes: ["chat"] })).key;
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const chat = (body: string | Buffer, headers: Record<string, string> = {}) =>
    fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
      body,
    });

  async function expectError(res: Response, status: number, code: string) {
    expect(res.status).toBe(status);
    const body = (await res.json()) as any;
    expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
    expect(body.error.code).toBe(code);
    return body.error;
  }

  it("malformed JSON → 400 invalid_json", async () => {
    await expectError(await chat("{not json"), 400, "invalid_json");
  });

  it("wrong types → 400 naming the parameter", async () => {
    const e = await expectError(
      await chat(JSON.stringify({ model: "mock-chat", messages: "hi" })),
      400,
      "invalid_value",
    );
    expect(e.param).toBe("messages");
    const t = await expectError(
      await chat(
        JSON.stringify({
          model: "mock-chat",
          messages: [{ role: "user", content: "x" }],
          temperature: "hot",
        }),
      ),
      400,
      "invalid_value",
    );
    expect(t.param).toBe("temperature");
    const m = await expectError(
      await chat(JSON.stringify({ messages: [{ role: "user", content: "x" }] })),
      400,
      "missing_required_parameter",
    );
    expect(m.param).toBe("model");
  });

  it("text the content policy and PII scrub read must be a string: parts, tool-call and function_call arguments", async () => {
    const cases: Array<[unknown[], string]> = [
      [
        [{ role: "user", content: [{ type: "text", text: ["Project Falcon", "a@b.co"] }] }],
        "messages.0.content",
      ],
      [[{ role: "user", content: [{ type: "text", text: { a: 1 } }] }], "messages.0.content"],
      [
        [{ role: "assistant", tool_calls: [{ id: "c", type: "function", function: null }] }],
        "messages.0.tool_calls.0.function",
      ],
      [
        [
          {
            role: "assistant",
            tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: { to: "a@b.co" } } }],
          },
        ],
        "messages.0.tool_calls.0.function.arguments",
      ],
      [
        [
          {
            role: "assistant",
            tool_calls: [{ id: "c", type: "function", function: { name: 12345, arguments: "{}" } }],
          },
        ],
        "messages.0.tool_calls.0.function.name",
      ],
      [
        [{ role: "assistant", function_call: { name: "f", arguments: { to: "a@b.co" } } }],
        "messages.0.function_call.arguments",
      ],
    ];
    for (const [messages, param] of cases) {
      const e = await expectError(
        await chat(JSON.stringify({ model: "mock-chat", messages })),
        400,
        "invalid_value",
      );
      expect(e.param).toBe(param);
    }
    // Valid shapes of the same fields still pass.
    const ok = await chat(
      JSON.stringify({
        model: "mock-chat",
        messages: [
          { role: "assistant", content: null, function_call: { name: "f", arguments: "{}" } },
          { role: "user", content: [{ type: "text", text: "hi" }] },
        ],
      }),
    );
    expect(ok.status).toBe(200);
  });

  it("a 10 MB body → 413", async () => {
    const big = JSON.stringify({
      model: "mock-chat",
      messages: [{ role: "user", content: "x".repeat(10 * 1024 * 1024) }],
    });
    const res = await chat(big).catch((error: Error) => error);
    // The proxy answers 413 before reading it all; depending on timing the client may see the reset instead.
    if (res instanceof Response) await expectError(res, 413, "request_too_large");
    const ok = await chat(
      JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "still up?" }] }),
    );
    expect(ok.status).toBe(200);
  });

  it("unknown model → 404 model_not_found", async () => {
    await expectError(
      await chat(JSON.stringify({ model: "gpt-17", messages: [{ role: "user", content: "x" }] })),
      404,
      "model_not_found",
    );
  });

  it("missing, unknown, revoked and expired keys → 401; missing scope → 403", async () => {
    const body = JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "x" }] });
    const none = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body });
    await expectError(none, 401, "missing_api_key");
    await expectError(await chat(body, { authorization: "Bearer sk-llmp-nope" }), 401, "invalid_api_key");

    const revoked = await proxy.createKey();
    await proxy.deps.keys.revoke(revoked.id);
    await expectError(await chat(body, { authorization: `Bearer ${revoked.key}` }), 401, "revoked_api_key");

    const expired = await proxy.createKey({ expiresAt: new Date(Date.now() - 1000).toISOString() });
    await expectError(await chat(body, { authorization: `Bearer ${expired.key}` }), 401, "expired_api_key");

    const viaHeader = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": "application/json" },
      body,
    });
    expect(viaHeader.status).toBe(200);
    // Another kind of Authorization header (Basic for an ingress) beside x-api-key: the x-api-key counts.
    const besideBasic = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "x-api-key": key, authorization: "Basic dXNlcjpwYXNz", "content-type": "application/json" },
      body,
    });
    expect(besideBasic.status).toBe(200);
    // A key sent without "Bearer": the message names the malformed header.
    const raw = await expectError(await chat(body, { authorization: key }), 401, "missing_api_key");
    expect(raw.message).toContain("not `Bearer <key>`");
    expect(raw.message).not.toContain(key);

    const noScope = await proxy.createKey({ scopes: ["models"] });
    await expectError(
      await chat(body, { authorization: `Bearer ${noScope.key}` }),
      403,
      "insufficient_scope",
    );
  });

  it("records a usage row for a rejection with a known key, none for an unknown key", async () => {
    const before = (await proxy.usageRows()).length;
    await chat(JSON.stringify({ model: "gpt-17", messages: [{ role: "user", content: "x" }] }));
    await chat(JSON.stringify({ model: "mock-chat", messages: [] }), {
      authorization: "Bearer sk-llmp-unknown",
    });
    const rows = await proxy.waitForUsageRows(before + 1);
    expect(rows.length).toBe(before + 1);
    expect(rows.at(-1)).toMatchObject({
      status: 404,
      error_code: "model_not_found",
      requested_model: "gpt-17",
    });
  });

  it("echoes x-request-id and answers unknown routes with a 404 envelope", async () => {
    const res = await fetch(`${proxy.url}/v1/nothing-here`, { headers: { "x-request-id": "req-abc-123" } });
    expect(res.headers.get("x-request-id")).toBe("req-abc-123");
    await expectError(res, 404, "unknown_url");
  });

  it("sends x-request-id with a JSON answer, a stream and an error, and keys the usage row by the generated id", async () => {
    const body = { model: "mock-chat", messages: [{ role: "user", content: "hello" }] };
    const json = await chat(JSON.stringify(body));
    expect(json.status).toBe(200);
    expect(json.headers.get("content-type")).toBe("application/json; charset=utf-8");
    const text = await json.text();
    expect(json.headers.get("content-length")).toBe(String(Buffer.byteLength(text)));
    expect(JSON.parse(text).object).toBe("chat.completion");
    const generated = json.headers.get("x-request-id")!;
    // A time-ordered UUIDv7, so the usage table's primary key grows at its right edge.
    expect(generated).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(Math.abs(uuidv7Time(generated) - Date.now())).toBeLessThan(60_000);

    const stream = await chat(JSON.stringify({ ...body, stream: true }), { "x-request-id": "client-id-7" });
    expect(stream.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(stream.headers.get("cache-control")).toBe("no-cache");
    expect(stream.headers.get("x-request-id")).toBe("client-id-7");
    expect(await stream.text()).toMatch(/data: \[DONE\]\n\n$/);

    const bad = await chat("{not json", { "x-request-id": "client-id-8" });
    expect(bad.headers.get("x-request-id")).toBe("client-id-8");
    await expectError(bad, 400, "invalid_json");

    const rows = await proxy.usageRows();
    // A generated id is the row's key, so the row and the response correlate; a client's own id is not (it may
    // reuse it), so that row gets a fresh one.
    expect(rows.find((r) => r.request_id === generated)).toMatchObject({ status: 200, stream: false });
    expect(rows.some((r) => r.request_id === "client-id-7")).toBe(false);
  });

  it("serves the API routes however they are spelled (exact paths take a shortcut past the router)", async () => {
    const body = JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "hello" }] });
    const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    for (const path of ["/v1/chat/completions", "/v1/chat/completions/", "/V1/Chat/Completions"]) {
      const res = await fetch(`${proxy.url}${path}`, { method: "POST", headers, body });
      expect([path, res.status]).toEqual([path, 200]);
      expect(((await res.json()) as { object: string }).object).toBe("chat.completion");
    }
    const get = await fetch(`${proxy.url}/v1/chat/completions`, { headers });
    expect(get.status).toBe(404);
    await expectError(get, 404, "unknown_url");
    const noKey = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body });
    await expectError(noKey, 401, "missing_api_key");
  });
});

describe("a body nested deeper than the proxy walks is a 400, not a stack overflow", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    // A real upstream (the body is serialized for it), the cache (its key walks the body) and PII on (the default).
    proxy = await startProxy({
      configYaml: upstreamConfig(
        { fake: upstream.baseUrl },
        [
          { name: "chat", provider: "fake" },
          { name: "embed", provider: "fake" },
        ],
        "cache: { enabled: true }\ncontent_policy:\n  max_input_tokens: 100000\n",
      ),
    });
    key = (await proxy.createKey({ scopes: ["*"] })).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const nested = (levels: number) => `${"[".repeat(levels)}${"]".repeat(levels)}`;
  const post = (path: string, body: string, auth = key) =>
    fetch(`${proxy.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${auth}`, "content-type": "application/json" },
      body,
    });
  const withMetadata = (levels: number) =>
    `{"model":"chat","messages":[{"role":"user","content":"hi"}],"metadata":${nested(levels)}}`;

  it("5,000 levels in a field or inside a message part → 400 invalid_json; nothing reaches the upstream", async () => {
    const before = upstream.requests.length;
    const bodies = [
      withMetadata(5000),
      `{"model":"chat","messages":[{"role":"user","content":[{"type":"text","text":"hi","extra":${nested(5000)}}]}]}`,
    ];
    for (const body of bodies) {
      const res = await post("/v1/chat/completions", body);
      expect(res.status).toBe(400);
      const { error } = (await res.json()) as any;
      expect(error).toMatchObject({ type: "invalid_request_error", code: "invalid_json" });
      expect(error.message).toContain("128 levels");
    }
    const embeddings = await post("/v1/embeddings", `{"model":"embed","input":${nested(5000)}}`);
    expect(embeddings.status).toBe(400);
    const admin = await post("/internal/teams", `{"name":"t","x":${nested(5000)}}`, TEST_MASTER_KEY);
    expect(admin.status).toBe(400);
    expect(upstream.requests.length).toBe(before);
  });

  it("128 levels in all pass (the top level counts as one), 129 do not", async () => {
    // The body object is level 1, so metadata may hold 127 more.
    const ok = await post("/v1/chat/completions", withMetadata(127));
    expect(ok.status).toBe(200);
    expect((upstream.requests.at(-1)!.body as any).metadata).toEqual(JSON.parse(nested(127)));
    expect((await post("/v1/chat/completions", withMetadata(128))).status).toBe(400);
    // And the worker is still serving.
    const res = await post(
      "/v1/chat/completions",
      JSON.stringify({ model: "chat", messages: [{ role: "user", content: "still there?" }] }),
    );
    expect(res.status).toBe(200);
  });
});
