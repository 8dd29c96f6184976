/**
 * PII restore keeps the order of a streamed answer. The restorer holds back text that could be the start of a
 * placeholder (`<`, `<<`, `<<PII_…`); when the text ends that way and a tool call follows, the held text must come
 * out before the tool call — on /v1/messages and /v1/responses a late `<` opened a second text block (a second
 * message item) after the tool use. Through the real app, with the official SDKs assembling the streams.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, upstreamConfig, type TestProxy } from "../../helpers/proxy";

const EMAIL = "maria.gonzalez@example.com";
const PH_RE = /<<PII_EMAIL_ADDRESS_[0-9a-f]{32}>>/;

/**
 * A chat upstream that answers every stream with text naming the placeholder it was sent (split across chunks) and
 * ending in `tail`, then a tool call whose arguments hold the placeholder (split too).
 */
function startUpstream(tail: () => string): Promise<{ url: string; sent: any[]; close(): Promise<void> }> {
  const sent: any[] = [];
  const server = http.createServer((req, res) => {
    let text = "";
    req.on("data", (d: Buffer) => (text += d));
    req.on("end", () => {
      const body = JSON.parse(text);
      sent.push(body);
      const ph = PH_RE.exec(JSON.stringify(body))?.[0] ?? "none";
      const base = { id: "chatcmpl-order", object: "chat.completion.chunk", created: 1, model: "m" };
      const delta = (d: Record<string, unknown>, finish: string | null = null) => ({
        ...base,
        choices: [{ index: 0, delta: d, finish_reason: finish }],
      });
      const chunks = [
        delta({ role: "assistant", content: "" }),
        delta({ content: `Mailing ${ph.slice(0, 9)}` }),
        delta({ content: `${ph.slice(9)} now, checking if a ${tail()}` }),
        delta({
          tool_calls: [
            { index: 0, id: "call_1", type: "function", function: { name: "lookup", arguments: "" } },
          ],
        }),
        delta({ tool_calls: [{ index: 0, function: { arguments: `{"to":"${ph.slice(0, 12)}` } }] }),
        delta({ tool_calls: [{ index: 0, function: { arguments: `${ph.slice(12)}"}` } }] }),
        delta({}, "tool_calls"),
        { ...base, choices: [], usage: { prompt_tokens: 20, completion_tokens: 9, total_tokens: 29 } },
      ];
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join("") + "data: [DONE]\n\n");
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
        sent,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      }),
    ),
  );
}

describe("PII restore: text held as a possible placeholder prefix comes out before the tool call", () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let proxy: TestProxy;
  let key: string;
  let tail = "<";

  beforeAll(async () => {
    upstream = await startUpstream(() => tail);
    proxy = await startProxy({
      configYaml: upstreamConfig({ up: upstream.url }, [{ name: "gpt-4o-mini", provider: "up" }]),
    });
    key = (await proxy.createKey()).key;
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const prompt = `Please check whether ${EMAIL} is on file.`;

  it("/v1/messages (Anthropic SDK): one text block, then the tool use; values restored", async () => {
    const client = new Anthropic({ apiKey: key, baseURL: proxy.url, maxRetries: 0 });
    for (const t of ["<", "<<", "<<PII_EMAIL_"]) {
      tail = t;
      const stream = client.messages.stream({
        model: "gpt-4o-mini",
        max_tokens: 100,
        tools: [{ name: "lookup", input_schema: { type: "object", properties: {} } }],
        messages: [{ role: "user", content: prompt }],
      });
      const starts: string[] = [];
      stream.on("streamEvent", (e) => {
        if (e.type === "content_block_start") starts.push(e.content_block.type);
      });
      const final = await stream.finalMessage();
      expect(PH_RE.test(JSON.stringify(upstream.sent.at(-1)))).toBe(true);
      expect(JSON.stringify(upstream.sent.at(-1))).not.toContain(EMAIL);
      expect(starts, `tail ${t}`).toEqual(["text", "tool_use"]);
      expect(final.content).toEqual([
        { type: "text", text: `Mailing ${EMAIL} now, checking if a ${t}` },
        { type: "tool_use", id: "call_1", name: "lookup", input: { to: EMAIL } },
      ]);
      expect(final.stop_reason).toBe("tool_use");
      expect(JSON.stringify(final)).not.toMatch(/<<PII_EMAIL_ADDRESS_[0-9a-f]/);
    }
  });

  it("/v1/responses (openai SDK): a message item, then the function call; values restored", async () => {
    const client = new OpenAI({ apiKey: key, baseURL: proxy.baseURL, maxRetries: 0 });
    for (const t of ["<", "<<", "<<PII_EMAIL_"]) {
      tail = t;
      const stream = client.responses.stream({
        model: "gpt-4o-mini",
        tools: [
          { type: "function", name: "lookup", parameters: { type: "object", properties: {} }, strict: false },
        ],
        input: prompt,
      });
      const added: string[] = [];
      stream.on("event", (e) => {
        if (e.type === "response.output_item.added") added.push(e.item.type);
      });
      const final = await stream.finalResponse();
      expect(added, `tail ${t}`).toEqual(["message", "function_call"]);
      expect(final.output.map((o) => o.type)).toEqual(["message", "function_call"]);
      const message = final.output[0] as OpenAI.Responses.ResponseOutputMessage;
      expect(message.content).toHaveLength(1);
      expect(message.content[0]).toMatchObject({
        type: "output_text",
        text: `Mailing ${EMAIL} now, checking if a ${t}`,
      });
      const call = final.output[1] as OpenAI.Responses.ResponseFunctionToolCall;
      expect(call).toMatchObject({ type: "function_call", call_id: "call_1", name: "lookup" });
      expect(JSON.parse(call.arguments)).toEqual({ to: EMAIL });
      expect(final.output_text).toBe(`Mailing ${EMAIL} now, checking if a ${t}`);
      expect(JSON.stringify(final)).not.toMatch(/<<PII_EMAIL_ADDRESS_[0-9a-f]/);
    }
  });
});
