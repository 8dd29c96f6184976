/**
 * The usage writer: `record()` only appends to an in-memory buffer; a timer writes the buffer in batches off the
 * request path: one `COPY … FROM STDIN` per batch on PostgreSQL, one multi-row INSERT built from arrays with unnest
 * where COPY is not available (the embedded PGlite) or a batch holds a row already stored. On a database error the rows stay in the
 * buffer, in order, and the writer backs off and retries, so a PostgreSQL outage loses nothing. `close()` tries a
 * last flush within a timeout and writes whatever is left to a JSONL spool file (fsync'd); `replaySpool()` inserts
 * spooled rows at the next start. Rows are keyed by request id and inserted with ON CONFLICT DO NOTHING, so a row
 * written twice (a retry whose first attempt did land, a spool replayed after a crash) is stored once.
 *
 * A long outage is bounded in memory: past `maxBuffered` rows the oldest are moved to the spool, and the spool is
 * replayed as soon as a flush succeeds again.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import type { Logger } from "pino";
import { isoUtc } from "../lib/iso-time";
import { usagePending } from "../metrics";
import type { UsageRow, UsageSink } from "../ports";
import { errorSummary } from "./postgres";

export interface UsageWriterArgs {
  pool: pg.Pool;
  log: Logger;
  /** Directory for the JSONL spool (shared by replicas is fine: files are claimed by atomic rename). */
  spoolDir: string;
  /** How often buffered rows are written, in ms. Default 1 000. */
  flushIntervalMs?: number;
  /** Rows per INSERT. Default 500. */
  batchSize?: number;
  /** Longest wait between retries while PostgreSQL is failing, in ms. Default 30 000. */
  maxBackoffMs?: number;
  /** How long `close()` tries to flush before spooling, in ms. Default 5 000. */
  closeTimeoutMs?: number;
  /** Rows kept in memory before the oldest move to the spool. Default 100 000. */
  maxBuffered?: number;
  /**
   * Write batches with COPY (default). `false` for servers that do not speak COPY over the wire protocol (PGlite's
   * socket server loses protocol sync on it): every batch is then an INSERT.
   */
  copy?: boolean;
}

export interface UsageWriter extends UsageSink {
  /** Insert every spooled row and delete the files. Resolves to the number of rows read from the spool. */
  replaySpool(): Promise<number>;
  /**
   * Give the spool files this process is replaying back under their own names, synchronously: for a stop during the
   * replay, so the next start (here or on another replica) replays them at once rather than after the stale-claim
   * wait. Rows already inserted collapse into themselves on the next replay (request-id key).
   */
  releaseClaims(): void;
  /**
   * Write every row not yet in PostgreSQL to the spool, synchronously, for a process about to die (an uncaught
   * exception): replayed at the next start like a stop's spool (rows of a write in flight collapse into themselves).
   */
  spoolNow(): number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SPOOL_RE = /^usage-.*\.jsonl$/;
const CLAIM_RE = /\.claimed-(\d+)-/;
/**
 * A replay touches its claimed file every CLAIM_HEARTBEAT_MS; a claim not touched for STALE_CLAIM_MS belongs to a
 * process that was killed while replaying (a SIGKILL, an OOM), and any start or later replay claims it again.
 */
const CLAIM_HEARTBEAT_MS = 15_000;
const STALE_CLAIM_MS = 2 * 60_000;

function claimIsStale(file: string): boolean {
  try {
    return Date.now() - fs.statSync(file).mtimeMs > STALE_CLAIM_MS;
  } catch {
    return false; // gone: another replica finished it
  }
}

/**
 * A uuid for the row's primary key. Request ids normally are uuids; any other string (a client's `x-request-id`) is
 * mapped to a stable name-based uuid so that replays of the same row still collapse into one.
 */
export function usageRowId(requestId: string): string {
  if (UUID_RE.test(requestId)) return requestId.toLowerCase();
  const h = crypto.createHash("sha1").update(`llm-proxy:usage:${requestId}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

const INT32_MAX = 2_147_483_647;
function int(n: unknown, max = INT32_MAX): number {
  const v = Math.round(Number(n));
  return Number.isFinite(v) ? Math.min(Math.max(v, 0), max) : 0;
}
function uuidOrNull(v: string | null): string | null {
  return v && UUID_RE.test(v) ? v : null;
}
/** PostgreSQL text cannot hold NUL; a model name from a client could. */
function text(v: string | null): string | null {
  return v === null || v === undefined ? null : String(v).replace(/\0/g, "");
}

const COLUMNS = `request_id, created_at, key_id, team_id, route, requested_model, served_model, provider,
                   prompt_tokens, completion_tokens, latency_ms, status, error_code, stream, cache_hit, pii_counts,
                   cached_tokens, cost_usd, cache_write_tokens`;

const INSERT_SQL = `
INSERT INTO usage (${COLUMNS})
SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::int[], $10::int[], $11::int[], $12::smallint[], $13::text[], $14::bool[],
                     $15::bool[], $16::jsonb[], $17::int[], $18::numeric[], $19::int[])
ON CONFLICT (request_id) DO NOTHING`;

/** A cost that PostgreSQL's numeric takes: finite and not negative, else unknown. */
function costOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null;
}

const NEEDS_ESCAPE = /[\\"]/;
/** A text element of a PostgreSQL array literal: NULL, or the value in double quotes with `\` and `"` escaped. */
function quoted(v: string | null): string {
  if (v === null) return "NULL";
  return NEEDS_ESCAPE.test(v) ? `"${v.replace(/[\\"]/g, "\\$&")}"` : `"${v}"`;
}

/**
 * A row's values in COLUMNS order, normalised once for both ways of writing it: uuids checked (else NULL), NUL
 * removed from text, integers clamped, an unknown cost NULL, an invalid time replaced by now. Null is SQL NULL.
 */
function usageFields(r: UsageRow): Array<string | null> {
  const created = (r.createdAt instanceof Date ? r.createdAt : new Date(r.createdAt)).getTime();
  const cost = costOrNull(r.costUsd);
  return [
    usageRowId(r.requestId),
    isoUtc(Number.isNaN(created) ? Date.now() : created),
    uuidOrNull(r.keyId),
    uuidOrNull(r.teamId),
    text(r.route) || "unknown",
    text(r.requestedModel),
    text(r.servedModel),
    text(r.provider),
    String(int(r.promptTokens)),
    String(int(r.completionTokens)),
    String(int(r.latencyMs)),
    String(int(r.status, 32_767)),
    text(r.errorCode),
    r.stream ? "t" : "f",
    r.cacheHit ? "t" : "f",
    r.piiCounts ? JSON.stringify(r.piiCounts) : null,
    // Rows spooled by an older version have neither field.
    String(int(r.cachedTokens)),
    cost === null ? null : String(cost),
    String(int(r.cacheWriteTokens)),
  ];
}

/**
 * The fields that may hold any text (a client's model name, a JSON object), by index: quoted in an array literal,
 * escaped in COPY. The others are uuids, numbers, booleans and an ISO time, which need neither (the time is quoted
 * in an array literal all the same).
 */
const FREE_TEXT = new Set([4, 5, 6, 7, 12, 15]);
const TIME_FIELD = 1;

/**
 * One INSERT for many rows: 19 array parameters whatever the batch size, so no statement per row. The array
 * literals are written here, as text: node-postgres' generic array encoding (a value conversion and an escaping
 * pass per element, a local-time string per Date) cost more CPU per row than the rest of a proxied request's
 * bookkeeping together. Every element is quoted or a number, uuid, boolean or NULL, so nothing a client sends can
 * change the literal's structure.
 */
export async function insertUsageRows(pool: pg.Pool, rows: readonly UsageRow[]): Promise<void> {
  if (!rows.length) return;
  const cols: string[][] = Array.from({ length: 19 }, () => new Array<string>(rows.length));
  rows.forEach((r, i) => {
    usageFields(r).forEach((v, c) => {
      cols[c][i] = v === null ? "NULL" : FREE_TEXT.has(c) || c === TIME_FIELD ? quoted(v) : v;
    });
  });
  await pool.query(
    INSERT_SQL,
    cols.map((c) => `{${c.join(",")}}`),
  );
}

const COPY_SQL = `COPY usage (${COLUMNS}) FROM STDIN`;

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };
/** A text field of COPY's text format: backslash, tab, newline and carriage return escaped. */
function copyText(v: string): string {
  return COPY_SPECIAL.test(v) ? v.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]) : v;
}

/**
 * One row as a line of COPY's text format (`\N` for NULL), columns in COPY_SQL's order; every free-text value is
 * escaped, so nothing a client sends can add a column or a row.
 */
function copyLine(r: UsageRow): string {
  const fields = usageFields(r);
  let line = "";
  for (let c = 0; c < fields.length; c++) {
    const v = fields[c];
    if (c) line += "\t";
    line += v === null ? "\\N" : FREE_TEXT.has(c) ? copyText(v) : v;
  }
  return `${line}\n`;
}

/**
 * One `COPY usage … FROM STDIN` for many rows: PostgreSQL spends about half the CPU per row of the INSERT above
 * (measured 4.4 against 8.4 µs), and the proxy's PostgreSQL usually shares the machine or the bill. COPY has no
 * ON CONFLICT: a batch with a row already stored fails whole with a unique violation (23505), and the writer
 * writes that batch again with insertUsageRows, which skips it. A failed COPY, or one without an answer within the
 * pool's query timeout, discards its connection.
 */
export async function copyUsageRows(pool: pg.Pool, rows: readonly UsageRow[]): Promise<void> {
  if (!rows.length) return;
  let data = "";
  for (const r of rows) data += copyLine(r);
  const timeoutMs = (pool.options as { query_timeout?: number }).query_timeout ?? 35_000;
  const client = await pool.connect();
  let broken: Error | undefined;
  // A checked-out client reports a lost connection as an 'error' event, which must be listened to.
  let lost: (error: Error) => void = () => undefined;
  const onClientError = (error: Error) => lost(error);
  client.on("error", onClientError);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`usage COPY: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      lost = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      const stream = client.query(copyFrom(COPY_SQL));
      stream.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      stream.on("finish", () => {
        clearTimeout(timer);
        resolve();
      });
      stream.end(data);
    });
  } catch (error) {
    // Any failure discards the connection: a server shutting down reports itself as a server error too (57P01),
    // and the failures worth a new connection or not are too rare to tell apart.
    broken = error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.off("error", onClientError);
    client.release(broken);
  }
}

/** What budgets need of a row. */
function costsOf(
  rows: readonly UsageRow[],
): Array<Pick<UsageRow, "keyId" | "teamId" | "costUsd" | "createdAt">> {
  return rows
    .filter((r) => r.costUsd)
    .map((r) => ({ keyId: r.keyId, teamId: r.teamId, costUsd: r.costUsd, createdAt: r.createdAt }));
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity): retrying the same row cannot succeed. */
function isDataError(error: unknown): boolean {
  const code = sqlState(error);
  return code !== null && (code.startsWith("22") || code.startsWith("23"));
}

function sqlState(error: unknown): string | null {
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" ? code : null;
}

/** JSON has no Date: spooled rows carry createdAt as an ISO string. */
function reviveRow(value: unknown): UsageRow | null {
  if (!value || typeof value !== "object") return null;
  const r = value as UsageRow & { createdAt: string };
  if (typeof r.requestId !== "string") return null;
  return { ...r, createdAt: new Date(r.createdAt) };
}

function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems (and platforms) refuse fsync on a directory; the file itself was fsync'd.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Write rows to `usage-<time>-<pid>-<random>.jsonl`: a temp name, fsync, then an atomic rename. */
function writeSpoolFile(dir: string, rows: readonly UsageRow[]): string {
  fs.mkdirSync(dir, { recursive: true });
  const name = `usage-${Date.now()}-${process.pid}-${crypto.randomBytes(4).toString("hex")}.jsonl`;
  const tmp = path.join(dir, `.${name}.tmp`);
  const fd = fs.openSync(tmp, "w", 0o600);
  try {
    fs.writeSync(fd, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const final = path.join(dir, name);
  fs.renameSync(tmp, final);
  fsyncDir(dir);
  return final;
}

export function createUsageWriter(args: UsageWriterArgs): UsageWriter {
  const { pool, log, spoolDir } = args;
  const flushIntervalMs = args.flushIntervalMs ?? 1_000;
  const batchSize = Math.max(1, args.batchSize ?? 500);
  const maxBackoffMs = args.maxBackoffMs ?? 30_000;
  const closeTimeoutMs = args.closeTimeoutMs ?? 5_000;
  const maxBuffered = Math.max(batchSize, args.maxBuffered ?? 100_000);
  const write = args.copy === false ? insertUsageRows : copyUsageRows;

  let buffer: UsageRow[] = [];
  /** The batch being written (out of `buffer`, still pending). */
  let inflight: UsageRow[] = [];
  let draining: Promise<void> | null = null;
  let failures = 0;
  let retryAt = 0;
  let closed = false;
  let spilled = false;
  let replaying: Promise<number> | null = null;
  // Pending rows across writers in this process (tests run several); the gauge shows their sum. It is refreshed
  // on every timer tick and after every write, not per record(), to keep record() to a push.
  const gauge = () => usagePending.set(countPending());

  const timer = setInterval(() => {
    gauge();
    if (buffer.length && Date.now() >= retryAt) void drain();
  }, flushIntervalMs);
  timer.unref();

  function backoff(error: unknown): void {
    failures += 1;
    const base = Math.min(maxBackoffMs, 250 * 2 ** Math.min(failures - 1, 16));
    retryAt = Date.now() + base / 2 + Math.random() * (base / 2);
    // One warning per outage, then quieter.
    const level = failures === 1 ? "warn" : "debug";
    log[level](
      { err: errorSummary(error), pending: pending(), failures },
      "usage rows not written; will retry",
    );
  }

  /**
   * Write one batch. A batch with a row already stored (a retry whose first attempt did land, a replayed spool) is
   * written again with ON CONFLICT DO NOTHING; rows a data error would reject forever are isolated and dropped
   * (logged).
   */
  async function writeBatch(batch: UsageRow[]): Promise<void> {
    try {
      await write(pool, batch);
    } catch (first) {
      let error = first;
      if (write !== insertUsageRows && sqlState(error) === "23505") {
        try {
          await insertUsageRows(pool, batch);
          return;
        } catch (again) {
          error = again;
        }
      }
      if (!isDataError(error) || batch.length === 0) throw error;
      for (const row of batch) {
        try {
          await insertUsageRows(pool, [row]);
        } catch (rowError) {
          if (!isDataError(rowError)) throw rowError;
          offTable.push(...costsOf([row]));
          log.error(
            { err: errorSummary(rowError), requestId: row.requestId },
            "usage row rejected by PostgreSQL; dropped",
          );
        }
      }
    }
  }

  /** Write the buffer batch by batch; stop at the first failure with the unwritten rows back in the buffer. */
  function drain(): Promise<void> {
    if (draining) return draining;
    draining = (async () => {
      // Yield first: if the body finished synchronously, its `finally` would run before `draining` is assigned
      // and leave a settled promise there for good (every later drain would be a no-op).
      await null;
      try {
        while (buffer.length) {
          // The batch leaves the buffer while it is written, so spill() may take from the buffer meanwhile.
          const batch = buffer.splice(0, batchSize);
          inflight = batch;
          try {
            await writeBatch(batch);
          } catch (error) {
            // Back at the front, in order: they are older than anything recorded during the attempt.
            if (!closed) buffer.unshift(...batch);
            backoff(error);
            return;
          } finally {
            inflight = [];
            gauge();
          }
          if (failures)
            log.info({ afterFailures: failures }, "usage rows written again after PostgreSQL errors");
          failures = 0;
          retryAt = 0;
        }
        if (spilled && !closed) {
          spilled = false;
          void replaySpool().catch((error) =>
            log.warn({ err: errorSummary(error) }, "usage spool replay failed"),
          );
        }
      } finally {
        draining = null;
      }
    })();
    return draining;
  }

  function spill(rows: UsageRow[]): void {
    try {
      writeSpoolFile(spoolDir, rows);
      spilled = true;
      offTable.push(...costsOf(rows));
      log.warn(
        { rows: rows.length, spoolDir },
        "usage buffer full during a PostgreSQL outage; oldest rows spooled to disk",
      );
    } catch (error) {
      // Keeping them in memory beats losing them.
      buffer.unshift(...rows);
      log.error({ err: errorSummary(error), spoolDir }, "cannot spool usage rows; keeping them in memory");
    }
  }

  function spoolNow(): number {
    const rows = [...inflight, ...buffer];
    if (!rows.length) return 0;
    writeSpoolFile(spoolDir, rows);
    buffer = [];
    return rows.length;
  }

  function pending(): number {
    return inflight.length + buffer.length;
  }

  function pendingCosts(scope: "key" | "team", since: Date): Map<string, number> {
    const from = since.getTime();
    const sums = new Map<string, number>();
    for (const rows of [inflight, buffer, offTable]) {
      for (const r of rows) {
        const id = scope === "key" ? r.keyId : r.teamId;
        if (!id || !r.costUsd || new Date(r.createdAt).getTime() < from) continue;
        sums.set(id, (sums.get(id) ?? 0) + r.costUsd);
      }
    }
    return sums;
  }

  function record(row: UsageRow): void {
    if (closed) {
      // After close() nothing flushes any more: straight to the spool.
      try {
        writeSpoolFile(spoolDir, [row]);
      } catch (error) {
        log.error(
          { err: errorSummary(error), requestId: row.requestId },
          "usage row recorded after close lost",
        );
      }
      return;
    }
    buffer.push(row);
    const over = pending() - maxBuffered;
    // Spill at least a batch at a time: one file per batch, not per row.
    if (over > 0) spill(buffer.splice(0, Math.min(buffer.length, Math.max(over, batchSize))));
    if (buffer.length >= batchSize && !draining && Date.now() >= retryAt) void drain();
  }

  async function flush(): Promise<void> {
    // An explicit flush ignores the backoff; it waits for a write in progress and then writes what is left.
    if (draining) await draining;
    retryAt = 0;
    await drain();
  }

  async function close(): Promise<void> {
    if (closed) return;
    clearInterval(timer);
    let timeout: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timeout = setTimeout(() => resolve("timeout"), closeTimeoutMs);
    });
    const result = await Promise.race([flush().then(() => "done" as const), timedOut]);
    clearTimeout(timeout);
    closed = true;
    if (pending()) {
      // A write still in flight may land too; the request-id key makes the replay a no-op for those rows.
      const rows = [...inflight, ...buffer];
      buffer = [];
      inflight = [];
      try {
        const file = writeSpoolFile(spoolDir, rows);
        log.warn(
          { rows: rows.length, file, reason: result },
          "usage rows spooled to disk for replay at next start",
        );
      } catch (error) {
        log.error(
          { err: errorSummary(error), rows: rows.length, spoolDir },
          "usage rows could not be spooled; lost",
        );
      }
    }
    writers.delete(writer);
    gauge();
    if (replaying) await replaying.catch(() => undefined);
  }

  async function replayFile(file: string): Promise<number> {
    const text = fs.readFileSync(file, "utf8");
    const rows: UsageRow[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        const row = reviveRow(JSON.parse(line));
        if (row) rows.push(row);
        else log.warn({ file }, "skipped a spooled usage line that is not a usage row");
      } catch {
        log.warn({ file }, "skipped a malformed spooled usage line");
      }
    }
    for (let i = 0; i < rows.length; i += batchSize) await writeBatch(rows.slice(i, i + batchSize));
    return rows.length;
  }

  /** Files this process has claimed and is replaying: claimed path → the name to give it back under. */
  const claims = new Map<string, string>();

  function releaseClaims(): void {
    for (const [claimed, original] of claims) {
      try {
        fs.renameSync(claimed, original);
        log.warn(
          { file: path.basename(original) },
          "spool replay interrupted; the file is left for the next start",
        );
      } catch {
        // finished or released meanwhile
      }
    }
    claims.clear();
  }

  async function replayAll(): Promise<number> {
    let names: string[];
    try {
      names = fs.readdirSync(spoolDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw error;
    }
    let total = 0;
    for (const name of names.sort()) {
      const claimMatch = CLAIM_RE.exec(name);
      const stale = claimMatch && claimIsStale(path.join(spoolDir, name));
      if (!SPOOL_RE.test(name) && !stale) continue;
      const original = stale ? name.slice(0, claimMatch.index) : name;
      const claimed = path.join(
        spoolDir,
        `${original}.claimed-${Date.now()}-${process.pid}-${crypto.randomBytes(3).toString("hex")}`,
      );
      try {
        // rename() is atomic: of several replicas renaming the same file, exactly one succeeds.
        fs.renameSync(path.join(spoolDir, name), claimed);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw error;
      }
      // The claim's mtime says it is alive (a rename keeps the old one: mark it now, then every heartbeat).
      const touch = () => {
        try {
          const now = new Date();
          fs.utimesSync(claimed, now, now);
        } catch {
          // released or finished meanwhile
        }
      };
      touch();
      const heartbeat = setInterval(touch, CLAIM_HEARTBEAT_MS);
      heartbeat.unref();
      claims.set(claimed, path.join(spoolDir, original));
      try {
        const n = await replayFile(claimed);
        // Released meanwhile (a stop): the file is back under its name, to be replayed again (idempotently).
        if (!claims.has(claimed)) continue;
        fs.unlinkSync(claimed);
        total += n;
        log.info({ rows: n, file: original }, "spooled usage rows replayed");
      } catch (error) {
        // Give the file back for a later replay (this replica or another).
        if (claims.has(claimed)) fs.renameSync(claimed, path.join(spoolDir, original));
        throw error;
      } finally {
        clearInterval(heartbeat);
        claims.delete(claimed);
      }
    }
    if (total) fsyncDir(spoolDir);
    return total;
  }

  /**
   * The cost of the rows this process spooled (until a replay has written them) or dropped: in neither the table nor
   * the buffer, but spent all the same (budgets count it; see spend.ts).
   */
  let offTable: Array<Pick<UsageRow, "keyId" | "teamId" | "costUsd" | "createdAt">> = [];

  function replaySpool(): Promise<number> {
    const settled = offTable.length;
    replaying ??= replayAll()
      .then((n) => {
        // Everything spooled before this replay began is in the table now (a later spill may have added more).
        offTable = offTable.slice(settled);
        return n;
      })
      .finally(() => {
        replaying = null;
      });
    return replaying;
  }

  const writer: UsageWriter = {
    record,
    flush,
    close,
    pending,
    pendingCosts,
    replaySpool,
    releaseClaims,
    spoolNow,
  };
  writers.add(writer);
  return writer;
}

const writers = new Set<UsageSink>();
function countPending(): number {
  let n = 0;
  for (const w of writers) n += w.pending();
  return n;
}
