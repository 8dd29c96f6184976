/**
 * Audit log helpers, pure: the recorded actions, who the actor is, and what a change changed. Snapshots hold the
 * admin API's snake_case fields and never a key, a key hash or any other secret.
 */
import { isIP } from "node:net";
import type { ApiKeyRecord, AuditAction, AuditChanges, AuditContext, Team } from "../ports";
import type { ProxyState } from "../state";

const ACTIONS: Record<AuditAction, true> = {
  "team.created": true,
  "team.updated": true,
  "team.deleted": true,
  "key.created": true,
  "key.updated": true,
  "key.revoked": true,
  "key.rotated": true,
  "kb.uploaded": true,
  "kb.ingested": true,
  "kb.source_deleted": true,
  "kb.reset": true,
};

/** Every action the audit log records (the `action` filter accepts these). */
export const AUDIT_ACTIONS = Object.keys(ACTIONS) as readonly AuditAction[];

export function isAuditAction(value: string): value is AuditAction {
  return Object.hasOwn(ACTIONS, value);
}

/** The audited state of a record: field → JSON value. */
export type AuditSnapshot = Record<string, unknown>;

export function teamSnapshot(t: Team): AuditSnapshot {
  return {
    name: t.name,
    requests_per_minute: t.limits.requestsPerMinute,
    tokens_per_minute: t.limits.tokensPerMinute,
    tokens_per_day: t.limits.tokensPerDay,
    allowed_models: t.allowedModels,
    budget_usd_per_month: t.budgetUsdPerMonth,
  };
}

/** The display prefix is public (every key listing shows it); the key and its hash are never part of a snapshot. */
export function keySnapshot(k: ApiKeyRecord): AuditSnapshot {
  return {
    name: k.name,
    prefix: k.prefix,
    team_id: k.teamId,
    scopes: k.scopes,
    expires_at: k.expiresAt,
    revoked_at: k.revokedAt,
    rotated_from: k.rotatedFrom,
    requests_per_minute: k.limits.requestsPerMinute,
    tokens_per_minute: k.limits.tokensPerMinute,
    tokens_per_day: k.limits.tokensPerDay,
    allowed_models: k.allowedModels,
    budget_usd_per_month: k.budgetUsdPerMonth,
  };
}

/**
 * Before/after per field. With both snapshots: only the fields whose value differs. With one missing (a creation
 * or a deletion): every field of the other, so the event shows the whole record.
 */
export function auditChanges(before: AuditSnapshot | null, after: AuditSnapshot | null): AuditChanges {
  const changes: AuditChanges = {};
  const fields = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  for (const field of fields) {
    const b = before?.[field] ?? null;
    const a = after?.[field] ?? null;
    // Values are JSON scalars or arrays of strings (scopes), so their JSON text compares them.
    if (before && after && JSON.stringify(b) === JSON.stringify(a)) continue;
    changes[field] = { before: b, after: a };
  }
  return changes;
}

/** `master`, or `key:<id>` for an API key (the knowledge-base routes accept `kb:write` keys). */
export function actorOf(principal: ProxyState["principal"]): string {
  if (!principal) return "unknown";
  return principal.kind === "master" ? "master" : `key:${principal.key.id}`;
}

/**
 * Who is making this admin request, and from where: `ctx.ip` reads X-Forwarded-For only as far as TRUSTED_PROXY_HOPS
 * allows, and an entry that is not an IP address (anything can be written there) gives way to the socket's peer.
 */
export function auditContextOf(ctx: {
  state: ProxyState;
  ip: string;
  req: { socket: { remoteAddress?: string } };
}): AuditContext {
  // Azure Application Gateway appends `ip:port`: the address without its port.
  const forwarded = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(ctx.ip)?.[1] ?? ctx.ip;
  const ip = isIP(forwarded) ? forwarded : (ctx.req.socket.remoteAddress ?? "");
  return {
    actor: actorOf(ctx.state.principal),
    requestId: ctx.state.requestId ?? null,
    clientIp: ip || null,
  };
}
