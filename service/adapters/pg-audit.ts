/**
 * The audit log over PostgreSQL (`audit_events`, migration 4). Key and team stores insert their events through
 * `insertAuditEvent` on the client of the change's own transaction; `record` is for changes made elsewhere.
 * Listing is keyset-paginated newest first on (at, id), with the position's `at` kept to the microsecond.
 */
import type pg from "pg";
import type { AuditEvent, AuditLog, AuditPosition, NewAuditEvent } from "../ports";

/** A pool or one transaction's client: both run a parameterized query. */
export interface Queryable {
  query(text: string, values: unknown[]): Promise<unknown>;
}

type Row = Record<string, unknown>;

export async function insertAuditEvent(db: Queryable, e: NewAuditEvent): Promise<void> {
  await db.query(
    `INSERT INTO audit_events (actor, action, target_type, target_id, request_id, client_ip, changes)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)`,
    [e.actor, e.action, e.targetType, e.targetId, e.requestId, e.clientIp, JSON.stringify(e.changes)],
  );
}

function toEvent(row: Row): AuditEvent {
  return {
    id: String(row.id),
    at: (row.at instanceof Date ? row.at : new Date(String(row.at))).toISOString(),
    actor: String(row.actor),
    action: row.action as AuditEvent["action"],
    targetType: row.target_type as AuditEvent["targetType"],
    targetId: String(row.target_id),
    requestId: row.request_id === null ? null : String(row.request_id),
    clientIp: row.client_ip === null ? null : String(row.client_ip),
    changes: row.changes as AuditEvent["changes"],
  };
}

export function createPgAuditLog(pool: pg.Pool): AuditLog {
  return {
    async record(event) {
      await insertAuditEvent(pool, event);
    },

    async list(q) {
      const where: string[] = [];
      const values: unknown[] = [];
      const add = (sql: (n: number) => string, value: unknown) => {
        values.push(value);
        where.push(sql(values.length));
      };
      if (q.from) add((n) => `at >= $${n}`, q.from);
      if (q.to) add((n) => `at < $${n}`, q.to);
      if (q.action) add((n) => `action = $${n}`, q.action);
      if (q.targetId) add((n) => `target_id = $${n}`, q.targetId);
      if (q.after) {
        values.push(q.after.at, q.after.id);
        where.push(`(at, id) < ($${values.length - 1}::timestamptz, $${values.length}::uuid)`);
      }
      // One row more than asked says whether another page follows.
      values.push(q.limit + 1);
      const { rows } = await pool.query(
        `SELECT id, at, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at_exact,
                actor, action, target_type, target_id, request_id, client_ip, changes
           FROM audit_events
          ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
          ORDER BY at DESC, id DESC
          LIMIT $${values.length}`,
        values,
      );
      const page = rows.slice(0, q.limit) as Row[];
      const last = page[page.length - 1];
      const next: AuditPosition | null =
        rows.length > q.limit && last ? { at: String(last.at_exact), id: String(last.id) } : null;
      return { events: page.map(toEvent), next };
    },
  };
}
