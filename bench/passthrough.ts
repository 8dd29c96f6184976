/**
 * The baseline: a bare node:http server that forwards every request to the upstream through a keep-alive undici
 * pool and pipes the answer back — no auth, routing, parsing or recording. `node dist/bench/passthrough.js <port> <upstream>`.
 */
import http from "node:http";
import { Pool } from "undici";

const port = Number(process.argv[2] ?? 0);
const upstream = new URL(process.argv[3] ?? "http://127.0.0.1:9");
const pool = new Pool(upstream.origin, { connections: 128 });

const server = http.createServer((req, res) => {
  const parts: Buffer[] = [];
  req.on("data", (d: Buffer) => parts.push(d));
  req.on("end", () => {
    pool
      .request({
        method: "POST",
        path: req.url ?? "/",
        headers: { "content-type": "application/json" },
        body: Buffer.concat(parts),
      })
      .then((up) => {
        res.writeHead(up.statusCode, {
          "content-type": String(up.headers["content-type"] ?? "application/json"),
        });
        up.body.pipe(res);
      })
      .catch(() => {
        res.writeHead(502);
        res.end();
      });
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => {
  const address = server.address() as { port: number };
  process.stdout.write(`${address.port}\n`);
});
