import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPostgres, redactDatabaseUrl, sslOptions } from "../../../service/adapters/postgres";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../../helpers/postgres";

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

  it("a CA always means verification (verify-ca: chain only), and the TLS parameters leave the connection string", () => {
    const r = sslOptions("postgres://u:p@h:5432/db?sslmode=require&application_name=x&sslrootcert=/x", CA);
    expect(r.ssl).toEqual({ ca: CA, rejectUnauthorized: true });
    expect(r.connectionString).toBe("postgres://u:p@h:5432/db?application_name=x");
    const chain = sslOptions("postgres://u:p@h:5432/db?sslmode=verify-ca", CA).ssl;
    expect(chain).toMatchObject({ ca: CA, rejectUnauthorized: true });
    expect((chain as { checkServerIdentity: () => unknown }).checkServerIdentity()).toBeUndefined();
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

/** A CA and a server certificate for `db.internal` signed by it (PEM), made with openssl in a temp dir. */
function makeCertificates(): { ca: string; otherCa: string; cert: string; key: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-tls-"));
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  for (const name of ["ca", "other"]) {
    ssl(
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=Test ${name} CA`,
      "-keyout", `${name}.key`, "-out", `${name}.crt`,
    );
  }
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=db.internal", "-keyout", "server.key", "-out", "server.csr");
  fs.writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:db.internal\n");
  ssl(
    "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
    "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt",
  );
  const read = (f: string) => fs.readFileSync(path.join(dir, f), "utf8");
  const out = { ca: read("ca.crt"), otherCa: read("other.crt"), cert: read("server.crt"), key: read("server.key") };
  fs.rmSync(dir, { recursive: true, force: true });
  return out;
}

describe("TLS against a real PostgreSQL serving a certificate for db.internal", () => {
  let server: ThrowawayPostgres;
  let certs: ReturnType<typeof makeCertificates>;

  beforeAll(async () => {
    certs = makeCertificates();
    server = await startThrowawayPostgres({ tls: { cert: certs.cert, key: certs.key } });
  });
  afterAll(async () => {
    await server?.destroy();
  });

  /** Connect as the proxy would (sslOptions) and ask the server whether this session is encrypted. */
  async function encrypted(sslmode: string, ca?: string): Promise<boolean> {
    const { connectionString, ssl } = sslOptions(`${server.url}?sslmode=${sslmode}`, ca);
    const client = new pg.Client({ connectionString, ssl, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      const { rows } = await client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
      return rows[0].ssl as boolean;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  it("verify-ca with the server's CA connects encrypted although the certificate names another host", async () => {
    expect(await encrypted("verify-ca", certs.ca)).toBe(true);
  });

  it("verify-full with the same CA refuses the host-name mismatch; a foreign CA is refused in any mode", async () => {
    await expect(encrypted("verify-full", certs.ca)).rejects.toThrow(/altnames|host/i);
    await expect(encrypted("verify-ca", certs.otherCa)).rejects.toThrow(/certificate/i);
    await expect(encrypted("require", certs.otherCa)).rejects.toThrow(/altnames|host|certificate/i);
  });

  it("require without a CA is encrypted but unverified (libpq semantics)", async () => {
    expect(await encrypted("require")).toBe(true);
  });
});
