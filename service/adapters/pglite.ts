/**
 * The embedded default's database: PGlite (PostgreSQL 18 compiled to WASM) persisted under `<dataDir>/pg`, served
 * on 127.0.0.1 with the PostgreSQL wire protocol so the same `pg` code and migrations run against it.
 *
 * PGlite has ONE backend. The socket server accepts one connection (`maxConnections: 1`), so the pg pool in front
 * of it must have `max: 1`: with more connections they would be multiplexed onto that backend, one connection's
 * open transaction would block the others and named prepared statements would collide. Use `poolOptions` below.
 */
import fs from "node:fs";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import type { Logger } from "pino";
import type { PostgresArgs } from "./postgres";

export interface EmbeddedPostgresArgs {
  /** The service's data directory; the database lives in `<dataDir>/pg`. */
  dataDir: string;
  log: Logger;
}

export interface EmbeddedPostgres {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (no password: it listens on loopback only). */
  url: string;
  /** The only pool size that works against PGlite. */
  poolMax: 1;
  /** Pass these to createPostgres: one connection, kept open (the server accepts no second one). */
  poolOptions: Pick<PostgresArgs, "max" | "idleTimeoutMs" | "maxLifetimeSeconds">;
  /** Stop the socket server and close the database (end pg pools first). */
  stop(): Promise<void>;
}

export async function startEmbeddedPostgres(args: EmbeddedPostgresArgs): Promise<EmbeddedPostgres> {
  const dir = path.resolve(args.dataDir, "pg");
  const fresh = !fs.existsSync(path.join(dir, "PG_VERSION"));
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (fresh) {
    args.log.info(
      { dir },
      "creating the embedded PostgreSQL database (first start only; takes several seconds)",
    );
  }
  const started = Date.now();
  const db = await PGlite.create({ dataDir: dir });
  const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 1 });
  try {
    await server.start();
  } catch (error) {
    await db.close().catch(() => undefined);
    throw error;
  }
  const port = Number(server.getServerConn().split(":").pop());
  args.log.info({ dir, port, ms: Date.now() - started }, "embedded PostgreSQL (PGlite) ready");
  let stopped = false;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    poolMax: 1,
    poolOptions: { max: 1, idleTimeoutMs: 0, maxLifetimeSeconds: 0 },
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      await db.close();
    },
  };
}
