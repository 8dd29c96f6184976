/**
 * A fake OpenAI-compatible upstream for tests and benchmarks — the only stand-in the test suite uses.
 * It records every request it receives and answers deterministically; tests can switch behaviour per request.
 *
 * Default chat answer: "Echo: <last user text>" with usage {prompt_tokens: 11, completion_tokens: 7}; when the
 * request has tools and the last message is from the user, it calls the first tool with {"query": <user text>};
 * after a tool result it answers "Tool said: <result>". Streams split the answer into word chunks.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: any;
}

export type Behaviour =
  | { kind: "ok" }
  | { kind: "status"; status: number; body?: unknown; headers?: Record<string, string> }
  /** Accept the connection and never answer. */
  | { kind: "hang" }
  /** Stream `okChunks` content chunks, then cut the connection (no [DONE]). */
  | { kind: "stream-cut"; okChunks: number }
  /** Destroy the socket right away (connection reset). */
  | { kind: "reset" }
  /** A 200 stream with no event but `data: [DONE]` (a broken server). */
  | { kind: "empty-stream" }
  /** Stream the answer cut at these character offsets (instead of word by word). */
  | { kind: "split"; at: number[] };

export interface FakeUpstreamOptions {
  /** Delay before answering, ms. */
  latencyMs?: number;
  /** Delay between stream chunks, ms. */
  chunkDelayMs?: number;
  /** Name in replies (model field prefix), to tell several fakes apart. */
  name?: string;
  /** Record request bodies (default true; the benchmark turns it off). */
  record?: boolean;
  /** The chat usage object it reports (default FAKE_USAGE). */
  usage?: Record<string, unknown>;
  /** false: embeddings answers carry no `usage` (as some vLLM, Ollama or gateway setups send them). */
  embeddingUsage?: boolean;
}

export interface FakeUpstream {
  /** Base URL including /v1. */
  baseUrl: string;
  port: number;
  requests: RecordedRequest[];
  /** Behaviour for the next requests (until changed); a function picks per request. */
  behave(b: Behaviour | ((req: RecordedRequest, n: number) => Behaviour)): void;
  close(): Promise<void>;
}

function lastUserText(body: any): string {
  const messages: any[] = Array.isArray(body?.messages) ? body.messages : [];
  const last = [...messages].reverse().find((m) => m.role === "user");
  if (!last) return "";
  if (typeof last.content === "string") return last.content;
  if (Array.isArray(last.content)) return last.content.map((p: any) => p.text ?? "").join(" ");
  return "";
}

export function answerFor(body: any): {
  content: string | null;
  toolCall: { name: string; arguments: string } | null;
} {
  const messages: any[] = Array.isArray(body?.messages) ? body.messages : [];
  const last = messages[messages.length - 1];
  if (last?.role === "tool") return { content: `Tool said: ${last.content}`, toolCall: null };
  if (Array.isArray(body?.tools) && body.tools.length && last?.role === "user") {
    const name = body.tools[0]?.function?.name ?? "tool";
    return { content: null, toolCall: { name, arguments: JSON.stringify({ query: lastUserText(body) }) } };
  }
  return { content: `Echo: ${lastUserText(body)}`, toolCall: null };
}

export const FAKE_USAGE = { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 };

export async function startFakeUpstream(opts: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const requests: RecordedRequest[] = [];
  let behaviour: Behaviour | ((req: RecordedRequest, n: number) => Behaviour) = { kind: "ok" };
  let count = 0;
  const sockets = new Set<import("node:net").Socket>();
  const name = opts.name ?? "fake";

  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", async () => {
      const text = Buffer.concat(parts).toString("utf8");
      let body: any = null;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {
        body = text;
      }
      const recorded: RecordedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body,
      };
      if (opts.record !== false) requests.push(recorded);
      const b = typeof behaviour === "function" ? behaviour(recorded, count++) : behaviour;
      if (opts.latencyMs) await new Promise((r) => setTimeout(r, opts.latencyMs));
      if (b.kind === "hang") return;
      if (b.kind === "reset") {
        req.socket.destroy();
        return;
      }
      if (b.kind === "status") {
        res.writeHead(b.status, { "content-type": "application/json", ...(b.headers ?? {}) });
        res.end(
          JSON.stringify(
            b.body ?? { error: { message: `fake ${b.status}`, type: "server_error", code: null } },
          ),
        );
        return;
      }
      if (req.url?.endsWith("/embeddings")) {
        const inputs = Array.isArray(body.input) ? body.input : [body.input];
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            object: "list",
            model: body.model,
            data: inputs.map((s: unknown, index: number) => {
              const vector = Array.from({ length: 8 }, (_, i) => ((String(s).length + i) % 7) / 7);
              // The official SDK asks for base64 (little-endian float32) unless told otherwise.
              const embedding =
                body.encoding_format === "base64"
                  ? Buffer.from(new Float32Array(vector).buffer).toString("base64")
                  : vector;
              return { object: "embedding", index, embedding };
            }),
            ...(opts.embeddingUsage === false
              ? {}
              : { usage: { prompt_tokens: 5 * inputs.length, total_tokens: 5 * inputs.length } }),
          }),
        );
        return;
      }
      const { content, toolCall } = answerFor(body);
      const id = `chatcmpl-${name}-${count}`;
      const created = 1_700_000_000;
      const model = `${body?.model ?? "unknown"}`;
      if (!body?.stream) {
        const message: any = { role: "assistant", content };
        if (toolCall) message.tool_calls = [{ id: "call_1", type: "function", function: toolCall }];
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            id,
            object: "chat.completion",
            created,
            model,
            choices: [{ index: 0, message, finish_reason: toolCall ? "tool_calls" : "stop" }],
            usage: opts.usage ?? FAKE_USAGE,
          }),
        );
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      if (b.kind === "empty-stream") {
        res.end("data: [DONE]\n\n");
        return;
      }
      const base = { id, object: "chat.completion.chunk", created, model };
      const send = async (obj: unknown) => {
        res.write(`data: ${JSON.stringify(obj)}\n\n`);
        if (opts.chunkDelayMs) await new Promise((r) => setTimeout(r, opts.chunkDelayMs));
      };
      await send({
        ...base,
        choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }],
      });
      let pieces: string[] = content ? (content.match(/\S+\s*/g) ?? [content]) : [];
      if (b.kind === "split" && content) {
        const cuts = [0, ...b.at.filter((i) => i > 0 && i < content.length), content.length];
        pieces = cuts.slice(1).map((end, i) => content.slice(cuts[i], end));
      }
      let sent = 0;
      for (const piece of pieces) {
        if (b.kind === "stream-cut" && sent >= b.okChunks) {
          req.socket.destroy();
          return;
        }
        await send({ ...base, choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] });
        sent++;
      }
      if (b.kind === "stream-cut") {
        req.socket.destroy();
        return;
      }
      if (toolCall) {
        await send({
          ...base,
          choices: [
            {
              index: 0,
              delta: {
                tool_calls: [
                  {
                    index: 0,
                    id: "call_1",
                    type: "function",
                    function: { name: toolCall.name, arguments: "" },
                  },
                ],
              },
              finish_reason: null,
            },
          ],
        });
        const args = toolCall.arguments;
        const mid = Math.floor(args.length / 2);
        for (const part of [args.slice(0, mid), args.slice(mid)]) {
          await send({
            ...base,
            choices: [
              {
                index: 0,
                delta: { tool_calls: [{ index: 0, function: { arguments: part } }] },
                finish_reason: null,
              },
            ],
          });
        }
      }
      await send({
        ...base,
        choices: [{ index: 0, delta: {}, finish_reason: toolCall ? "tool_calls" : "stop" }],
      });
      if (body?.stream_options?.include_usage)
        await send({ ...base, choices: [], usage: opts.usage ?? FAKE_USAGE });
      res.end("data: [DONE]\n\n");
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    port,
    requests,
    behave(b) {
      behaviour = b;
      count = 0;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
