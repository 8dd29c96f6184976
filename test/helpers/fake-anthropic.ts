/**
 * A local stand-in for Anthropic's Messages API (POST /v1/messages), JSON and SSE, for the translation tests.
 * It echoes the last user text ("Echo: <text>"); when a tool is forced (tool_choice {type: "tool"}) or the text
 * asks to "use a tool", it answers with a tool_use block for the first tool, input {query: <text>}. Usage:
 * input_tokens 10, cache_read_input_tokens 5, output_tokens = words in the answer. Streams send the event sequence
 * Anthropic documents (message_start, content_block_start/delta/stop, ping, message_delta, message_stop), the
 * text in word-sized deltas and tool input in two input_json_delta pieces. A stop sequence the echo contains ends
 * it there, with stop_reason "stop_sequence" and the sequence.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { startFakeUpstream, type FakeUpstream } from "./fake-upstream";
import { startProxy, type TestProxy } from "./proxy";

export interface AnthropicRecorded {
  headers: http.IncomingHttpHeaders;
  body: any;
}

export type AnthropicBehaviour =
  | { kind: "ok" }
  | { kind: "status"; status: number; body: unknown; headers?: Record<string, string> }
  | { kind: "stream-error-after"; events: number };

export interface FakeAnthropic {
  baseUrl: string;
  requests: AnthropicRecorded[];
  behave(b: AnthropicBehaviour): void;
  close(): Promise<void>;
}

function lastUserText(messages: any[]): string {
  const user = [...messages].reverse().find((m) => m.role === "user");
  if (!user) return "";
  if (typeof user.content === "string") return user.content;
  return user.content
    .map((b: any) => (b.type === "text" ? b.text : b.type === "tool_result" ? `tool said ${b.content}` : ""))
    .filter(Boolean)
    .join(" ");
}

export async function startFakeAnthropic(): Promise<FakeAnthropic> {
  const requests: AnthropicRecorded[] = [];
  let behaviour: AnthropicBehaviour = { kind: "ok" };

  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(parts).toString("utf8"));
      requests.push({ headers: req.headers, body });
      if (behaviour.kind === "status") {
        res.writeHead(behaviour.status, { "content-type": "application/json", ...behaviour.headers });
        res.end(JSON.stringify(behaviour.body));
        return;
      }
      const text = lastUserText(body.messages);
      const forced = body.tool_choice?.type === "tool" ? body.tool_choice.name : null;
      const tool =
        body.tools?.length && (forced || /use a tool/.test(text))
          ? (body.tools.find((t: any) => t.name === forced) ?? body.tools[0])
          : null;
      // A stop sequence the echo would contain ends the answer before it, as Anthropic does.
      const seq: string | null =
        (body.stop_sequences as string[] | undefined)?.find((x) => `Echo: ${text}`.includes(x)) ?? null;
      const answer = seq ? `Echo: ${text}`.slice(0, `Echo: ${text}`.indexOf(seq)) : `Echo: ${text}`;
      const stopReason = tool ? "tool_use" : seq ? "stop_sequence" : "end_turn";
      const input = { query: text };
      const usage = { input_tokens: 10, cache_read_input_tokens: 5, cache_creation_input_tokens: 0 };
      const outputTokens = tool ? 7 : answer.split(" ").length;
      const id = `msg_${requests.length}`;
      if (!body.stream) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            id,
            type: "message",
            role: "assistant",
            model: body.model,
            content: tool
              ? [{ type: "tool_use", id: "toolu_1", name: tool.name, input }]
              : [{ type: "text", text: answer }],
            stop_reason: stopReason,
            stop_sequence: tool ? null : seq,
            usage: { ...usage, output_tokens: outputTokens },
          }),
        );
        return;
      }
      const events: Array<[string, unknown]> = [
        [
          "message_start",
          {
            type: "message_start",
            message: {
              id,
              type: "message",
              role: "assistant",
              model: body.model,
              content: [],
              usage: { ...usage, output_tokens: 1 },
            },
          },
        ],
      ];
      if (tool) {
        const json = JSON.stringify(input);
        const half = Math.floor(json.length / 2);
        events.push(
          [
            "content_block_start",
            {
              type: "content_block_start",
              index: 0,
              content_block: { type: "tool_use", id: "toolu_1", name: tool.name, input: {} },
            },
          ],
          [
            "content_block_delta",
            {
              type: "content_block_delta",
              index: 0,
              delta: { type: "input_json_delta", partial_json: json.slice(0, half) },
            },
          ],
          ["ping", { type: "ping" }],
          [
            "content_block_delta",
            {
              type: "content_block_delta",
              index: 0,
              delta: { type: "input_json_delta", partial_json: json.slice(half) },
            },
          ],
          ["content_block_stop", { type: "content_block_stop", index: 0 }],
        );
      } else {
        events.push([
          "content_block_start",
          { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
        ]);
        answer.split(/(?<= )/).forEach((piece) => {
          events.push([
            "content_block_delta",
            { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: piece } },
          ]);
        });
        events.push(["content_block_stop", { type: "content_block_stop", index: 0 }]);
      }
      events.push(
        [
          "message_delta",
          {
            type: "message_delta",
            delta: { stop_reason: stopReason, stop_sequence: tool ? null : seq },
            usage: { output_tokens: outputTokens },
          },
        ],
        ["message_stop", { type: "message_stop" }],
      );
      res.writeHead(200, { "content-type": "text/event-stream" });
      const cutAt = behaviour.kind === "stream-error-after" ? behaviour.events : Infinity;
      events.forEach(([event, data], i) => {
        if (i === cutAt) {
          res.write(
            `event: error\ndata: ${JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } })}\n\n`,
          );
        }
        if (i >= cutAt) return;
        res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      });
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    behave(b) {
      behaviour = b;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A proxy with two providers, each with a local stand-in: `gpt-4o-mini` on a fake OpenAI-compatible upstream (served
 * as `upstream-model`) and `claude-sonnet-5-5` on a fake Messages API — for the wire-format tests that must reach both.
 */
export async function startTwoProviderProxy(): Promise<{
  upstream: FakeUpstream;
  claude: FakeAnthropic;
  proxy: TestProxy;
  close(): Promise<void>;
}> {
  const upstream = await startFakeUpstream();
  const claude = await startFakeAnthropic();
  const proxy = await startProxy({
    env: { ANTHROPIC_API_KEY: "anthropic-test-credential-0123456789" },
    configYaml: [
      "providers:",
      `  fake: { type: openai, base_url: "${upstream.baseUrl}", max_retries: 0 }`,
      `  claude: { type: anthropic, base_url: "${claude.baseUrl}", api_key_env: ANTHROPIC_API_KEY, max_retries: 0 }`,
      "models:",
      "  - { name: gpt-4o-mini, provider: fake, model: upstream-model }",
      "  - { name: claude-sonnet-5-5, provider: claude }",
    ].join("\n"),
  });
  return {
    upstream,
    claude,
    proxy,
    async close() {
      await proxy.close();
      await upstream.close();
      await claude.close();
    },
  };
}
