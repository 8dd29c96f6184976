import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeUpstream, type FakeUpstream } from "../../helpers/fake-upstream";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

const EMAIL = "maria.gonzalez@example.com";
const PHONE = "+1 415 555 0132";
const SECRET = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789ABCD";
const TEXT = `Please email ${EMAIL} or call ${PHONE}. My key is ${SECRET}.`;

function sseText(body: string): { content: string; args: string; done: boolean; errors: number } {
  let content = "";
  let args = "";
  let done = false;
  let errors = 0;
  for (const event of body.split("\n\n")) {
    if (!event.startsWith("data: ")) continue;
    const data = event.slice(6);
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    const chunk = JSON.parse(data);
    if (chunk.error) errors++;
    for (const c of chunk.choices ?? []) {
      content += c.delta?.content ?? "";
      args += c.delta?.tool_calls?.[0]?.function?.arguments ?? "";
    }
  }
  return { content, args, done, errors };
}

describe("PII never reaches the upstream, and the client gets its values back", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let key: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [
        { name: "chat", provider: "fake" },
        { name: "embed", provider: "fake", kind: "embedding" } as never,
      ]),
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const call = (body: unknown, path = "/v1/chat/completions") =>
    fetch(`${proxy.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  function assertScrubbed(sent: unknown) {
    const text = JSON.stringify(sent);
    for (const value of [EMAIL, "415 555 0132", SECRET]) expect(text).not.toContain(value);
    expect(text).toMatch(/<<PII_EMAIL_ADDRESS_[0-9a-f]{32}>>/);
    expect(text).toMatch(/<<PII_PHONE_NUMBER_[0-9a-f]{32}>>/);
    expect(text).toContain("<<REDACTED_INTERNAL_SECRET>>");
  }

  it("JSON: scrubbed on the way out, restored on the way back; secrets stay redacted; counts recorded", async () => {
    const entityCount = async (entity: string) => {
      const text = await (await fetch(`${proxy.url}/metrics`)).text();
      const m = new RegExp(`^llmproxy_pii_entities_total\\{entity="${entity}"\\} (\\d+)`, "m").exec(text);
      return Number(m?.[1] ?? 0);
    };
    const emailsBefore = await entityCount("EMAIL_ADDRESS");
    const res = await call({
      model: "chat",
      messages: [
        { role: "system", content: `Escalations go to ${EMAIL}.` },
        { role: "user", content: TEXT },
      ],
    });
    expect(res.status).toBe(200);
    assertScrubbed(upstream.requests.at(-1)!.body);
    const answer = ((await res.json()) as any).choices[0].message.content;
    expect(answer).toBe(
      `Echo: Please email ${EMAIL} or call ${PHONE}. My key is <<REDACTED_INTERNAL_SECRET>>.`,
    );
    const rows = await proxy.waitForUsageRows(1);
    expect(rows.at(-1).pii_counts).toMatchObject({ EMAIL_ADDRESS: 2, PHONE_NUMBER: 1, INTERNAL_SECRET: 1 });
    expect((await entityCount("EMAIL_ADDRESS")) - emailsBefore).toBe(2);
  });

  it("streams: restored whatever the chunk boundaries, including a placeholder split at every position", async () => {
    const expected = `Echo: Please email ${EMAIL} or call ${PHONE}. My key is <<REDACTED_INTERNAL_SECRET>>.`;
    const first = await call({ model: "chat", stream: true, messages: [{ role: "user", content: TEXT }] });
    expect(sseText(await first.text()).content).toBe(expected);
    const sentText: string = upstream.requests.at(-1)!.body.messages[0].content;
    assertScrubbed(sentText);
    // The fake echoes what it received: find where the email placeholder sits in its answer.
    const upstreamAnswer = `Echo: ${sentText}`;
    const start = upstreamAnswer.search(/<<PII_EMAIL_ADDRESS_/);
    const end = upstreamAnswer.indexOf(">>", start) + 2;
    for (let cut = start; cut <= end; cut++) {
      // The same values get new placeholders per request, but the same length and position.
      upstream.behave({ kind: "split", at: [cut, cut + 3] });
      const res = await call({ model: "chat", stream: true, messages: [{ role: "user", content: TEXT }] });
      const got = sseText(await res.text());
      expect(got.done).toBe(true);
      expect(got.content, `cut at ${cut}`).toBe(expected);
    }
    upstream.behave({ kind: "ok" });
  });

  it("tool-call arguments are scrubbed for the upstream and restored for the client (JSON and stream)", async () => {
    const tools = [{ type: "function", function: { name: "contact", parameters: { type: "object" } } }];
    const json = await call({
      model: "chat",
      tools,
      messages: [{ role: "user", content: `write to ${EMAIL}` }],
    });
    const args = JSON.parse(((await json.json()) as any).choices[0].message.tool_calls[0].function.arguments);
    expect(args).toEqual({ query: `write to ${EMAIL}` });

    const stream = await call({
      model: "chat",
      stream: true,
      tools,
      messages: [{ role: "user", content: `write to ${EMAIL}` }],
    });
    expect(JSON.parse(sseText(await stream.text()).args)).toEqual({ query: `write to ${EMAIL}` });

    // The assistant's earlier tool call and the tool result are scrubbed too.
    await call({
      model: "chat",
      tools,
      messages: [
        { role: "user", content: "hi" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "c1",
              type: "function",
              function: { name: "contact", arguments: JSON.stringify({ to: EMAIL }) },
            },
          ],
        },
        { role: "tool", tool_call_id: "c1", content: `sent to ${EMAIL}` },
      ],
    });
    const sent = upstream.requests.at(-1)!.body;
    expect(JSON.stringify(sent)).not.toContain(EMAIL);
    expect(JSON.parse(sent.messages[1].tool_calls[0].function.arguments).to).toMatch(/^<<PII_EMAIL_ADDRESS_/);
  });

  it("embeddings input is redacted irreversibly", async () => {
    const res = await call({ model: "embed", input: [`contact ${EMAIL}`, "nothing here"] }, "/v1/embeddings");
    expect(res.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.input).toEqual([
      "contact <<REDACTED_EMAIL_ADDRESS>>",
      "nothing here",
    ]);
  });
});

describe("a prompt with PII is cached without its values, and a hit is restored with the caller's own", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let key: string;
  const stored: string[] = [];

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    proxy = await startProxy({
      env: { CACHE_ENABLED: "true" },
      configYaml: upstreamConfig({ fake: upstream.baseUrl }, [{ name: "chat", provider: "fake" }]),
      // Watch what reaches the (real, in-process) cache.
      adjust(deps) {
        const cache = deps.cache!;
        const set = cache.set.bind(cache);
        cache.set = (k, value, ttl) => {
          stored.push(JSON.stringify(value));
          return set(k, value, ttl);
        };
      },
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const call = (body: object) =>
    fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "chat", ...body }),
    });
  const storedCount = async (n: number) => {
    for (let i = 0; i < 100 && stored.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    expect(stored).toHaveLength(n);
  };

  it("JSON: the second identical prompt hits; a prompt differing only in its values hits and gets its own", async () => {
    const ask = (email: string) => ({
      messages: [{ role: "user", content: `Write to ${email} and ${EMAIL}, then ${email} again (json).` }],
    });
    const first = await call(ask("li.wei@example.org"));
    expect(first.headers.get("x-cache")).toBe("miss");
    const expected =
      "Echo: Write to li.wei@example.org and maria.gonzalez@example.com, then li.wei@example.org again (json).";
    expect(((await first.json()) as any).choices[0].message.content).toBe(expected);
    await storedCount(1);
    // Stored with numbered placeholders and no value.
    expect(stored[0]).not.toContain("example");
    expect(stored[0]).toContain("<<PII_EMAIL_ADDRESS_00000000000000000000000000000001>>");
    expect(stored[0]).toContain("<<PII_EMAIL_ADDRESS_00000000000000000000000000000002>>");

    const calls = upstream.requests.length;
    const again = await call(ask("li.wei@example.org"));
    expect(again.headers.get("x-cache")).toBe("hit");
    expect(((await again.json()) as any).choices[0].message.content).toBe(expected);

    const other = await call(ask("tom.baker@example.net"));
    expect(other.headers.get("x-cache")).toBe("hit");
    expect(((await other.json()) as any).choices[0].message.content).toBe(
      "Echo: Write to tom.baker@example.net and maria.gonzalez@example.com, then tom.baker@example.net again (json).",
    );
    expect(upstream.requests.length).toBe(calls);

    // A different pattern of values is a different prompt for the provider: a miss.
    const swapped = await call({
      messages: [{ role: "user", content: `Write to ${EMAIL} and ${EMAIL}, then ${EMAIL} again (json).` }],
    });
    expect(swapped.headers.get("x-cache")).toBe("miss");
  });

  it("streams: a placeholder split across chunks is stored whole in canonical form and replayed restored", async () => {
    const text = `Stream: call ${PHONE} or mail ${EMAIL}.`;
    const expected = `Echo: ${text}`;
    // Split the upstream's answer ("Echo: Stream: call <<PII_PHONE…>> or mail <<PII_EMAIL…>>.") inside the email
    // placeholder.
    const emailAt = "Echo: Stream: call ".length + "<<PII_PHONE_NUMBER_>>".length + 32 + " or mail ".length;
    upstream.behave({ kind: "split", at: [emailAt + 20] });
    const before = stored.length;
    const miss = await call({ stream: true, messages: [{ role: "user", content: text }] });
    expect(miss.headers.get("x-cache")).toBe("miss");
    const missText = await miss.text();
    expect(sseText(missText).content).toBe(expected);
    upstream.behave({ kind: "ok" });
    await storedCount(before + 1);
    const entry = stored.at(-1)!;
    expect(entry).not.toContain("example.com");
    expect(entry).not.toContain("555");
    expect(entry).toMatch(/<<PII_EMAIL_ADDRESS_0{31}2>>/);

    const hit = await call({ stream: true, messages: [{ role: "user", content: text }] });
    expect(hit.headers.get("x-cache")).toBe("hit");
    const hitText = await hit.text();
    expect(sseText(hitText).content).toBe(expected);
    expect(hitText.match(/^data: /gm)).toHaveLength(missText.match(/^data: /gm)!.length);
  });

  it("a prompt that already holds numbered placeholders is not cached (they could not be told apart)", async () => {
    const body = {
      messages: [
        {
          role: "user",
          content: `Mail ${EMAIL} about <<PII_EMAIL_ADDRESS_00000000000000000000000000000001>>`,
        },
      ],
    };
    const first = await call(body);
    expect(first.headers.get("x-cache")).toBe("bypass");
    expect(((await first.json()) as any).choices[0].message.content).toContain(EMAIL);
    expect((await call(body)).headers.get("x-cache")).toBe("bypass");
  });
});
