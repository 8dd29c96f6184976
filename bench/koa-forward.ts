/**
 * A reference point, not a target: the smallest Koa app that does what every proxied request needs at least — read
 * and parse the JSON body, forward it through a keep-alive undici pool, parse the JSON answer, send it — with none
 * of the proxy's features (no auth, routing, limits, usage rows, logs or metrics). Its ratio to the bare
 * passthrough shows how much of a Koa proxy's budget the framework and the two JSON parses take before any feature.
 * `node dist/bench/koa-forward.js <port> <upstream>`.
 */
import Koa from "koa";
import { Pool } from "undici";

const port = Number(process.argv[2] ?? 0);
const upstream = new URL(process.argv[3] ?? "http://127.0.0.1:9");
const pool = new Pool(upstream.origin, { connections: 128 });

function readBody(req: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => resolve(parts.length === 1 ? parts[0] : Buffer.concat(parts)));
    req.on("error", reject);
  });
}

const app = new Koa();
app.use(async (ctx) => {
  const body: unknown = JSON.parse((await readBody(ctx.req)).toString("utf8"));
  const answer = await pool.request({
    method: "POST",
    path: ctx.path,
    headers: ["content-type", "application/json"],
    body: JSON.stringify(body),
  });
  const text = await answer.body.text();
  JSON.parse(text);
  ctx.status = answer.statusCode;
  ctx.type = "application/json";
  ctx.body = text;
});
const server = app.listen(port, "127.0.0.1", () => {
  const address = server.address() as { port: number };
  process.stdout.write(`${address.port}\n`);
});
server.keepAliveTimeout = 60_000;
