/**
 * Benchmark upstream: a minimal OpenAI-compatible server answering at once (0 ms), or streaming paced chunks
 * for the time-to-first-byte measurement. Run as its own process: `node dist/bench/upstream.js <port>`.
 */
import http from "node:http";

const port = Number(process.argv[2] ?? 0);
const PACE_MS = 50;
const completion = JSON.stringify({
  id: "chatcmpl-bench",
  object: "chat.completion",
  created: 1_700_000_000,
  model: "bench-model",
  choices: [
    { index: 0, message: { role: "assistant", content: "The answer is 42." }, finish_reason: "stop" },
  ],
  usage: { prompt_tokens: 25, completion_tokens: 6, total_tokens: 31 },
});

function chunk(content: string | null, finish: string | null, usage = false): string {
  return `data: ${JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "bench-model",
    choices: usage ? [] : [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finish }],
    ...(usage ? { usage: { prompt_tokens: 25, completion_tokens: 5, total_tokens: 30 } } : {}),
  })}\n\n`;
}

const server = http.createServer((req, res) => {
  const parts: Buffer[] = [];
  req.on("data", (d: Buffer) => parts.push(d));
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(parts).toString("utf8") || "{}") as { stream?: boolean };
    if (!body.stream) {
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(completion),
      });
      res.end(completion);
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    const words = ["The ", "answer ", "is ", "42", "."];
    let i = 0;
    const tick = () => {
      if (i < words.length) {
        res.write(chunk(words[i++], null));
        setTimeout(tick, PACE_MS);
        return;
      }
      res.write(chunk(null, "stop"));
      res.write(chunk(null, null, true));
      res.end("data: [DONE]\n\n");
    };
    tick();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => {
  const address = server.address() as { port: number };
  process.stdout.write(`${address.port}\n`);
});
