import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";
import { freePort } from "../../helpers/postgres";

async function post(proxy: TestProxy, key: string, body: unknown, path = "/v1/chat/completions") {
  const res = await fetch(`${proxy.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** Parse an SSE body into its data payloads. */
function events(text: string): string[] {
  return text
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6));
}

/**
 * A proxy (model "own") in front of a hand-written upstream; `closed` resolves when the upstream sees its
 * request's connection close. Both are torn down afterwards.
 */
async function withOwnUpstream(
  handler: http.RequestListener,
  run: (ctx: { proxy: TestProxy & { key: string }; closed: Promise<void> }) => Promise<void>,
): Promise<void> {
  let upstreamClosed!: () => void;
  const closed = new Promise<void>((resolve) => (upstreamClosed = resolve));
  const server = http.createServer((req, res) => {
    req.socket.once("close", upstreamClosed);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxy = await startProxy({
    configYaml: upstreamConfig({ own: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1` }, [
      { name: "own", provider: "own" },
    ]),
  });
  try {
    await run({ proxy: Object.assign(proxy, { key: (await proxy.createKey()).key }), closed });
  } finally {
    await proxy.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

/** An upstream stream that sends one chunk ("Hel"), then nothing. */
const oneChunkThenSilence: http.RequestListener = (req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/event-stream" });
    const chunk = { id: "c1", object: "chat.completion.chunk", created: 1, model: "m" };
    res.write(
      `data: ${JSON.stringify({ ...chunk, choices: [{ index: 0, delta: { content: "Hel" } }] })}\n\n`,
    );
  });
};

function chatRequest(proxy: TestProxy & { key: string }, body: object, signal: AbortSignal) {
  return fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${proxy.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "own", ...body }),
    signal,
  });
}

describe("forwarding, routing and fallbacks", () => {
  let primary: FakeUpstream;
  let backup: FakeUpstream;
  let proxy: TestProxy;
  let key: string;
  let deadPort: number;

  beforeAll(async () => {
    primary = await startFakeUpstream({ name: "primary" });
    backup = await startFakeUpstream({ name: "backup" });
    deadPort = await freePort();
    proxy = await startProxy({
      configYaml: upstreamConfig(
        { primary: primary.baseUrl, backup: backup.baseUrl, dead: `http://127.0.0.1:${deadPort}/v1` },
        [
          { name: "main", provider: "primary", model: "primary-model", fallbacks: ["spare"] },
          { name: "spare", provider: "backup", model: "backup-model" },
          { name: "unreachable", provider: "dead", fallbacks: ["spare"] },
          { name: "solo", provider: "primary" },
        ],
      ),
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await primary?.close();
    await backup?.close();
  });

  it("forwards every field the client sent, unchanged, including ones it does not know", async () => {
    const body = {
      model: "main",
      messages: [
        { role: "developer", content: "be brief" },
        {
          role: "user",
          content: [
            { type: "text", text: "what is this?" },
            { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=", detail: "low" } },
          ],
        },
      ],
      tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } }],
      tool_choice: "auto",
      parallel_tool_calls: false,
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "answer",
          strict: true,
          schema: { type: "object", properties: { a: { type: "string" } } },
        },
      },
      temperature: 0.3,
      top_p: 0.9,
      stop: ["\n\n", "END"],
      seed: 42,
      n: 1,
      logprobs: true,
      top_logprobs: 2,
      user: "user-123",
      presence_penalty: 0.1,
      frequency_penalty: 0.2,
      logit_bias: { "50256": -100 },
      metadata: { team: "x" },
      some_future_field: { nested: [1, 2, 3] },
    };
    const res = await post(proxy, key, body);
    expect(res.status).toBe(200);
    const received = primary.requests.at(-1)!.body;
    expect(received).toEqual({ ...body, model: "primary-model" });
  });

  it("falls back on a 500 and records the served model", async () => {
    primary.behave({ kind: "status", status: 500 });
    const res = await post(proxy, key, { model: "main", messages: [{ role: "user", content: "hi" }] });
    primary.behave({ kind: "ok" });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text).choices[0].message.content).toBe("Echo: hi");
    expect(backup.requests.at(-1)!.body.model).toBe("backup-model");
    const rows = await proxy.usageRows();
    expect(rows.at(-1)).toMatchObject({
      requested_model: "main",
      served_model: "spare",
      provider: "backup",
      status: 200,
    });
  });

  it("a model name the config does not know is `other` in /metrics, and kept bounded on the row", async () => {
    const junk = [`scanner-${"x".repeat(100_000)}`, "gpt-4o-typo", "made-up-1"];
    for (const model of junk) {
      const res = await post(proxy, key, { model, messages: [{ role: "user", content: "hi" }] });
      expect(res.status).toBe(404);
    }
    expect(
      (await post(proxy, key, { model: "solo", messages: [{ role: "user", content: "hi" }] })).status,
    ).toBe(200);
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    const models = new Set(
      [...metrics.matchAll(/llmproxy_requests_total\{[^}]*model="([^"]*)"/g)].map((m) => m[1]),
    );
    for (const name of junk) expect(models.has(name)).toBe(false);
    expect(models.has("other")).toBe(true);
    expect(models.has("solo")).toBe(true);
    expect(metrics.length).toBeLessThan(100_000);
    const rows = await proxy.usageRows();
    const long = rows.find((r) => String(r.requested_model).startsWith("scanner-"))!;
    expect(long.status).toBe(404);
    expect(String(long.requested_model).length).toBeLessThanOrEqual(257);
  });

  it("falls back on a timeout and on connection refused", async () => {
    primary.behave({ kind: "hang" });
    const started = Date.now();
    const timedOut = await post(proxy, key, { model: "main", messages: [{ role: "user", content: "slow" }] });
    primary.behave({ kind: "ok" });
    expect(timedOut.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900); // the configured 2 s attempt timeout
    const refused = await post(proxy, key, {
      model: "unreachable",
      messages: [{ role: "user", content: "x" }],
    });
    expect(refused.status).toBe(200);
    expect(JSON.parse(refused.text).choices[0].message.content).toBe("Echo: x");
  });

  it("falls back on 429 but returns a provider's 400 as is", async () => {
    primary.behave({ kind: "status", status: 429, headers: { "retry-after": "1" } });
    const limited = await post(proxy, key, { model: "main", messages: [{ role: "user", content: "x" }] });
    expect(limited.status).toBe(200);
    primary.behave({
      kind: "status",
      status: 400,
      body: { error: { message: "bad temperature", type: "invalid_request_error", code: "bad_temp" } },
    });
    const before = backup.requests.length;
    const rejected = await post(proxy, key, { model: "main", messages: [{ role: "user", content: "x" }] });
    primary.behave({ kind: "ok" });
    expect(rejected.status).toBe(400);
    expect(JSON.parse(rejected.text).error).toMatchObject({ message: "bad temperature", code: "bad_temp" });
    expect(backup.requests.length).toBe(before);
  });

  it("answers 502 when every deployment fails, and 504 when they time out", async () => {
    primary.behave({ kind: "status", status: 503 });
    const failed = await post(proxy, key, { model: "solo", messages: [{ role: "user", content: "x" }] });
    expect(failed.status).toBe(502);
    expect(JSON.parse(failed.text).error).toMatchObject({ type: "upstream_error" });
    primary.behave({ kind: "hang" });
    const slow = await post(proxy, key, { model: "solo", messages: [{ role: "user", content: "x" }] });
    primary.behave({ kind: "ok" });
    expect(slow.status).toBe(504);
    expect(JSON.parse(slow.text).error.code).toBe("upstream_timeout");
  });

  for (const [why, failure] of [
    ["fails before its first byte", { kind: "status", status: 500 }],
    ["ends without a single event (only [DONE])", { kind: "empty-stream" }],
  ] as const) {
    it(`falls back for a stream that ${why}`, async () => {
      primary.behave(failure);
      const res = await post(proxy, key, {
        model: "main",
        stream: true,
        messages: [{ role: "user", content: "a b" }],
      });
      primary.behave({ kind: "ok" });
      expect(res.status).toBe(200);
      const data = events(res.text);
      expect(data.at(-1)).toBe("[DONE]");
      const text = data
        .slice(0, -1)
        .map((d) => JSON.parse(d).choices[0]?.delta?.content ?? "")
        .join("");
      expect(text).toBe("Echo: a b");
    });
  }

  it("never falls back after the first streamed byte: the client gets an error event and the row is an error", async () => {
    const before = backup.requests.length;
    primary.behave({ kind: "stream-cut", okChunks: 1 });
    const res = await post(proxy, key, {
      model: "main",
      stream: true,
      messages: [{ role: "user", content: "one two three four" }],
    });
    primary.behave({ kind: "ok" });
    expect(res.status).toBe(200);
    const data = events(res.text);
    expect(data).not.toContain("[DONE]");
    expect(JSON.parse(data.at(-1)!).error).toMatchObject({
      type: "upstream_error",
      code: "upstream_stream_error",
    });
    expect(backup.requests.length).toBe(before);
    const rows = await proxy.waitForUsageRows(1);
    const last = rows.filter((r) => r.stream).at(-1);
    expect(last).toMatchObject({ status: 502, error_code: "upstream_stream_error" });
  });

  it("a JSON answer that stalls mid-body is a timeout (504), and one that is not JSON is a bad response (502)", async () => {
    const stallAfterHalf: http.RequestListener = (req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "application/json", "content-length": "100" });
      res.write('{"id":"chatcmpl-1","object":');
    };
    await withOwnUpstream(stallAfterHalf, async ({ proxy: own }) => {
      const res = await post(own, own.key, { model: "own", messages: [{ role: "user", content: "x" }] });
      expect(res.status).toBe(504);
      expect(JSON.parse(res.text).error.code).toBe("upstream_timeout");
    });
    const notJson: http.RequestListener = (req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "application/json" });
      res.end("<html>gateway page</html>");
    };
    await withOwnUpstream(notJson, async ({ proxy: own }) => {
      const res = await post(own, own.key, { model: "own", messages: [{ role: "user", content: "x" }] });
      expect(res.status).toBe(502);
      expect(JSON.parse(res.text).error.code).toBe("upstream_bad_response");
    });
  });

  it("cancels the upstream call when the client goes away, and records client_closed_request", async () => {
    // An upstream that never answers.
    await withOwnUpstream(
      () => undefined,
      async ({ proxy: own, closed }) => {
        const client = new AbortController();
        const pending = chatRequest(
          own,
          { messages: [{ role: "user", content: "hi" }] },
          client.signal,
        ).catch((e: Error) => e);
        await new Promise((r) => setTimeout(r, 200));
        client.abort();
        expect(await pending).toBeInstanceOf(Error);
        // The upstream connection is closed long before any timeout would have fired.
        await closed;
        const rows = await own.waitForUsageRows(1);
        // 499 (client closed request), not a 502 charged to the upstream: nothing failed but the client's wait.
        expect(rows[0]).toMatchObject({ status: 499, error_code: "client_closed_request" });
        const metrics = await (await fetch(`${own.url}/metrics`)).text();
        expect(metrics).toMatch(/llmproxy_requests_total\{[^}]*status="499"[^}]*\} 1/);
      },
    );
  });

  it("a stream that goes silent mid-way ends with an upstream_timeout event and a 504 row", async () => {
    await withOwnUpstream(oneChunkThenSilence, async ({ proxy: own }) => {
      const res = await post(own, own.key, {
        model: "own",
        stream: true,
        messages: [{ role: "user", content: "x" }],
      });
      expect(res.status).toBe(200);
      const data = events(res.text);
      expect(data[0]).toContain('"Hel"');
      expect(JSON.parse(data.at(-1)!).error).toMatchObject({ code: "upstream_timeout" });
      const rows = await own.waitForUsageRows(1);
      expect(rows[0]).toMatchObject({ stream: true, status: 504, error_code: "upstream_timeout" });
    });
  });

  it("stops a stream and releases the upstream when the client leaves mid-stream", async () => {
    // Only the client leaving can end this request (before the attempt timeout).
    await withOwnUpstream(oneChunkThenSilence, async ({ proxy: own, closed }) => {
      const client = new AbortController();
      const res = await chatRequest(
        own,
        { stream: true, messages: [{ role: "user", content: "hi" }] },
        client.signal,
      );
      const reader = res.body!.getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      expect(first).toContain('"Hel"');
      client.abort();
      await closed;
      const rows = await own.waitForUsageRows(1);
      // The stream's head was sent: its status stays what the client got.
      expect(rows[0]).toMatchObject({ stream: true, status: 200, error_code: "client_closed_request" });
    });
  });
});
