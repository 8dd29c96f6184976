import { Writable } from "node:stream";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { createPostgres, redactDatabaseUrl, sslOptions } from "../../../service/adapters/postgres";

const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

describe("TLS from sslmode and DATABASE_CA", () => {
  it("follows libpq: no sslmode/disable/prefer → off, require → encrypted unverified, verify-* → verified", () => {
    expect(sslOptions("postgres://u:p@h:5432/db").ssl).toBe(false);
    expect(sslOptions("postgres://u:p@h:5432/db?sslmode=disable").ssl).toBe(false);
    expect(sslOptions("postgres://u:p@h:5432/db?sslmode=prefer").ssl).toBe(false);
    expect(sslOptions("postgres://u:p@h:5432/db?sslmode=require").ssl).toEqual({ rejectUnauthorized: false });
    const verifyCa = sslOptions("postgres://u:p@h/db?sslmode=verify-ca").ssl;
    expect(verifyCa).toMatchObject({ rejectUnauthorized: true });
    expect((verifyCa as { checkServerIdentity: () => unknown }).checkServerIdentity()).toBeUndefined();
    expect(sslOptions("postgres://u:p@h/db?sslmode=verify-full").ssl).toEqual({ rejectUnauthorized: true });
  });

  it("a CA always means full verification, and the TLS parameters leave the connection string", () => {
    const r = sslOptions("postgres://u:p@h:5432/db?sslmode=require&application_name=x&sslrootcert=/x", CA);
    expect(r.ssl).toEqual({ ca: CA, rejectUnauthorized: true });
    expect(r.connectionString).toBe("postgres://u:p@h:5432/db?application_name=x");
  });
});

describe("secrets", () => {
  it("redacts the password of a URL", () => {
    expect(redactDatabaseUrl("postgres://app:s3cr3t-pw@db.internal:5432/llm?sslmode=require")).toBe(
      "postgres://app:***@db.internal:5432/llm?sslmode=require",
    );
    expect(redactDatabaseUrl("not a url")).not.toContain("not a url");
  });

  it("never logs the password, even when connecting fails", async () => {
    let out = "";
    const sink = new Writable({
      write(chunk, _enc, cb) {
        out += String(chunk);
        cb();
      },
    });
    const log = pino({ level: "trace" }, sink);
    // Nothing listens on port 1: the connection is refused at once.
    const { pool, db } = createPostgres({
      url: "postgres://app:VerySecretPassword123@127.0.0.1:1/llm",
      log,
      pingTimeoutMs: 2_000,
    });
    expect(await db.ping()).toBe(false);
    await pool.end();
    expect(out).toContain("127.0.0.1:1");
    expect(out).not.toContain("VerySecretPassword123");
  });
});
