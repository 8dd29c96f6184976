/**
 * Shared rate limiter on Redis: one Lua script, loaded once per connection and then called by SHA (ioredis
 * `defineCommand` sends EVAL the first time on each connection, then EVALSHA, and falls back to EVAL after NOSCRIPT,
 * e.g. after a Redis restart or a failover), decides an admission atomically: it checks every budget of the key and
 * of its team and commits all of them or none. On a cluster each node's connection loads the script the same way,
 * so it exists on whichever node owns the slot. The algorithm is the one
 * described in memory-limiter.ts (61 one-second slots per scope, so no 60-second span exceeds a per-minute budget;
 * a calendar counter per UTC day).
 *
 * Redis Cluster: a script may only touch keys of one hash slot. A team budget is shared by many keys, so "one hash
 * tag per key" cannot be atomic with the team. Instead a key's counters live under **its team's** hash tag:
 *
 *     team          {llmproxy:t:<teamId>}
 *     key of team   {llmproxy:t:<teamId>}:k:<keyId>
 *     key, no team  {llmproxy:k:<keyId>}
 *
 * A key belongs to exactly one team for its lifetime (the admin API cannot move it), so one admission touches one
 * slot: atomic and cluster-safe. The price — all of a team's keys on one shard — is no worse than the team budget
 * itself, which every request of the team must touch anyway.
 *
 * The script is registered once per key count (`llmproxyLimit1`, `llmproxyLimit2`; same Lua, same SHA) rather than
 * with the key count as first argument: ioredis' cluster auto-pipelining routes a custom command by its first
 * argument, so a leading count ("1", "2") would put admissions of keys on different nodes into one pipeline, which
 * ioredis rejects ("All keys in the pipeline should belong to the same slots allocation group").
 *
 * Clock: the script reads Redis's own `TIME` by default, so every replica judges windows by one clock (no skew
 * between pods). Tests pass a fake clock, sent as an argument.
 *
 * Admissions issued in one turn of the event loop for the same scopes go to Redis as one script call in the next,
 * which decides them in the order they were issued, each exactly as if sent alone (one script runs atomically): under
 * load one round trip and one script run carry several requests instead of one each. Across different keys of one
 * team (different scope sets, different calls) the order within a turn is the order of the calls, not of the
 * requests: every budget still holds, but of two requests in the same turn, the later may take a team's last tokens.
 *
 * Refunds (the usual settlement: fewer tokens used than reserved) issued in one turn of the event loop for the same
 * scopes, slot and day are summed and sent as one script call in the next: a refund only lowers that slot's and that
 * day's counters (each floored at 0), so one refund of a + b is exactly two of a and b. Under load this saves a
 * round trip per request; `reconcile()` still resolves only once its refund is written.
 *
 * Storage: one small hash per scope — `o` oldest slot, `R`/`T` requests/tokens in the window, `r<sec>`/`t<sec>` per
 * slot, `D`/`dT` UTC day number and its tokens — expiring after the day is over (plus 61 s).
 */
import type { AdmissionRequest, Admission, RateLimiter, Reservation } from "../ports";
import {
  BUDGET_NAMES,
  NOOP_RESERVATION,
  SLOT_MS,
  DAY_MS,
  admissionFromDecision,
  limitedScopes,
  type Decision,
  type LimitedScope,
} from "./memory-limiter";
import { LIMITER_COMMANDS, type RedisClient } from "./redis";

/**
 * KEYS: one hash per limited scope (the key's, then the team's), all under one hash tag.
 * ARGV[1] op "admit" | "adjust"; ARGV[2] now in ms, or "" for the server clock.
 * admit:  ARGV[3] deadline in ms of the same clock, or "" for none: a call that reaches the script after it commits
 *         nothing and returns {-1, now} (its callers gave up waiting and were answered without it; see
 *         resilient-limiter.ts). Then one or more admissions, each: tokens, then per scope rpm, tpm, tpd (-1 =
 *         unlimited, 0 = blocked); decided in order, as if sent one by one. Every decision comes back prefixed by
 *         its length:
 *         → {1, now, R1, T1, D1, NR1, NT1, R2, …} or {0, now, scope, budget (1 rpm, 2 tpm, 3 tpd), retryMs, R1, …}
 *         where NR/NT are the newest slot holding requests/tokens (-1: none), from which the reset headers count.
 * adjust: ARGV[3] reservation slot (s), ARGV[4] reservation day, ARGV[5] delta tokens (< 0 refund, > 0 overage).
 */
export const LIMITER_LUA = `
local SLOTS = 61

-- adjust with a refund (the common settlement): give tokens back to the reservation's slot and day. No clock
-- needed: a refund has no effect once its slot or day is gone; while the slot is still stored, lowering it keeps
-- the totals consistent with the later prune.
if ARGV[1] == 'adjust' and tonumber(ARGV[5]) < 0 then
  local slot, rday, refund = tonumber(ARGV[3]), tonumber(ARGV[4]), -tonumber(ARGV[5])
  local ts = 't' .. slot
  for i = 1, #KEYS do
    local h = KEYS[i]
    local v = redis.call('HMGET', h, 'o', 'T', 'D', 'dT', ts)
    local o = tonumber(v[1])
    if o then
      local have = tonumber(v[5])
      if slot >= o and have then
        local amount = math.min(refund, have)
        redis.call('HSET', h, ts, have - amount, 'T', (tonumber(v[2]) or 0) - amount)
      end
      local dT = tonumber(v[4]) or 0
      if tonumber(v[3]) == rday and dT > 0 then
        redis.call('HSET', h, 'dT', dT - math.min(refund, dT))
      end
    end
  end
  return 1
end

local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[2])
end
local cur = math.floor(now / 1000)
local low = cur - SLOTS + 1
local day = math.floor(now / 86400000)
local rc, tc = 'r' .. cur, 't' .. cur

-- Read a scope and drop the slots that left the window.
-- Returns {R, T, dT, existed, r<cur>, t<cur>, dirty (state changed), fresh (needs its expiry set)}.
local function load(h)
  local v = redis.call('HMGET', h, 'o', 'R', 'T', 'D', 'dT', rc, tc)
  local o = tonumber(v[1])
  local R = tonumber(v[2]) or 0
  local T = tonumber(v[3]) or 0
  local dT = tonumber(v[5]) or 0
  local newDay = tonumber(v[4]) ~= day
  if newDay then dT = 0 end
  if o == nil then return {0, 0, 0, false, 0, 0, true, true} end
  local dirty, fresh = newDay or o < low, newDay
  if low - o >= SLOTS then
    -- Every slot has expired: drop them in one go (the day counter is written back by save).
    redis.call('DEL', h)
    R, T, fresh = 0, 0, true
  elseif o < low then
    for s = o, low - 1 do
      local x = redis.call('HMGET', h, 'r' .. s, 't' .. s)
      if x[1] or x[2] then
        R = R - (tonumber(x[1]) or 0)
        T = T - (tonumber(x[2]) or 0)
        redis.call('HDEL', h, 'r' .. s, 't' .. s)
      end
    end
  end
  return {R, T, dT, true, tonumber(v[6]) or 0, tonumber(v[7]) or 0, dirty, fresh}
end

-- Write a scope back; its expiry (end of the UTC day + one window) is set once per day, or after a reset.
local function save(h, u)
  redis.call('HSET', h, 'o', low, 'R', u[1], 'T', u[2], 'D', day, 'dT', u[3], rc, u[5], tc, u[6])
  if u[8] then redis.call('PEXPIRE', h, (day + 1) * 86400000 - now + SLOTS * 1000) end
end

-- ms until enough of the window's usage (field prefix f) has left it to free need.
local function retry(h, f, need)
  local freed = 0
  for s = low, cur do
    freed = freed + (tonumber(redis.call('HGET', h, f .. s)) or 0)
    if freed >= need then return (s + SLOTS) * 1000 - now end
  end
  return SLOTS * 1000
end

-- The newest slot of the window holding usage (field prefix f; have = the current slot's, total = the window's),
-- or -1: the budget is whole once it has left the window. After an admission that is the current slot.
local function newest(h, f, have, total)
  if total <= 0 then return -1 end
  if have > 0 then return cur end
  local fields = {}
  for s = low, cur - 1 do fields[#fields + 1] = f .. s end
  local v = redis.call('HMGET', h, unpack(fields))
  for k = #v, 1, -1 do
    if (tonumber(v[k]) or 0) > 0 then return low + k - 1 end
  end
  return -1
end

-- One admission: tokens at ARGV[base], then per scope rpm, tpm, tpd.
local function admit(base)
  local tokens = tonumber(ARGV[base])
  local st = {}
  local rs, rb, rm = 0, 0, -1
  for i = 1, #KEYS do
    local h = KEYS[i]
    local u = load(h)
    st[i] = u
    local b = base + (i - 1) * 3
    local rpm, tpm, tpd = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local waits = {}
    if rpm >= 0 and u[1] + 1 > rpm then
      waits[1] = (rpm < 1) and 60000 or retry(h, 'r', u[1] + 1 - rpm)
    end
    if tpm >= 0 and (tpm == 0 or u[2] + tokens > tpm) then
      waits[2] = (tpm == 0 or tokens > tpm) and 60000 or retry(h, 't', u[2] + tokens - tpm)
    end
    if tpd >= 0 and (tpd == 0 or u[3] + tokens > tpd) then
      waits[3] = (day + 1) * 86400000 - now
    end
    for k = 1, 3 do
      if waits[k] and waits[k] > rm then rs, rb, rm = i, k, waits[k] end
    end
  end
  local out
  if rs > 0 then
    out = {0, now, rs, rb, rm}
    for i = 1, #KEYS do
      local u = st[i]
      if u[4] and u[7] then save(KEYS[i], u) end
    end
  else
    out = {1, now}
    for i = 1, #KEYS do
      local u = st[i]
      u[1], u[2], u[3] = u[1] + 1, u[2] + tokens, u[3] + tokens
      u[5], u[6] = u[5] + 1, u[6] + tokens
      save(KEYS[i], u)
    end
  end
  for i = 1, #KEYS do
    local u = st[i]
    out[#out + 1] = u[1]
    out[#out + 1] = u[2]
    out[#out + 1] = u[3]
    out[#out + 1] = newest(KEYS[i], 'r', u[5], u[1])
    out[#out + 1] = newest(KEYS[i], 't', u[6], u[2])
  end
  return out
end

-- Admissions in order, each seeing the ones before it; every decision prefixed by its length.
if ARGV[1] == 'admit' then
  local deadline = tonumber(ARGV[3])
  if deadline and now > deadline then return {-1, now} end
  local all = {}
  for base = 4, #ARGV, 1 + 3 * #KEYS do
    local out = admit(base)
    all[#all + 1] = #out
    for k = 1, #out do all[#all + 1] = out[k] end
  end
  return all
end

-- adjust with an overage: charge it now (prune first, so the slot invariant holds).
local delta = tonumber(ARGV[5])
if delta > 0 then
  for i = 1, #KEYS do
    local h = KEYS[i]
    local u = load(h)
    u[2], u[3], u[6] = u[2] + delta, u[3] + delta, u[6] + delta
    save(h, u)
  end
end
return 1
`;

/** The script as a command per number of keys (limitedScopes yields the key's scope, the team's, or both). */
const COMMANDS = LIMITER_COMMANDS;

type LimitCommands = {
  [N in keyof typeof COMMANDS as (typeof COMMANDS)[N]]: (
    ...keysThenArgs: Array<string | number>
  ) => Promise<number[]>;
};

export interface RedisLimiterOptions {
  /** A standalone or a Cluster client (see redis.ts). */
  client: RedisClient;
  /** Key prefix inside the hash tags. Default "llmproxy". */
  prefix?: string;
  /** Clock in ms since the epoch; default: the Redis server's clock (`TIME`). Tests pass a fake clock. */
  now?: () => number;
  /**
   * How long a caller waits for an admission, in ms (the resilient wrapper's deadline); null: no bound. A call that
   * reaches Redis later (a stalled server, a failover) commits nothing, so requests already answered without it —
   * 503 fail-closed, or admitted by the per-process fallback — do not also use up the shared budget when Redis
   * resumes. Judged by Redis's clock, offset by what the decisions report.
   */
  deadlineMs?: number | null;
}

/** Hash names of the limited scopes, all under one hash tag (see the header comment). */
export function scopeKeys(prefix: string, req: AdmissionRequest, scopes: LimitedScope[]): string[] {
  return scopes.map((s) => {
    if (s.scope === "team") return `{${prefix}:t:${s.id}}`;
    return req.teamId ? `{${prefix}:t:${req.teamId}}:k:${s.id}` : `{${prefix}:k:${s.id}}`;
  });
}

/** Admissions per script call: keeps one call's run on the Redis server short (~1 ms). */
const MAX_BATCH = 32;

const budgetArg = (v: number | null) => (v === null ? -1 : v);

/**
 * Entries gathered during one turn of the event loop, one per id, handed to `flush` together in the next (the first
 * entry of a turn schedules it). Returns the entry for `id`, made by `create` when the turn has none yet.
 */
function perTurn<E>(flush: (entries: E[]) => void): (id: string, create: () => E) => E {
  let pending = new Map<string, E>();
  return (id, create) => {
    if (pending.size === 0) {
      setImmediate(() => {
        const entries = [...pending.values()];
        pending = new Map();
        flush(entries);
      });
    }
    let entry = pending.get(id);
    if (!entry) {
      entry = create();
      pending.set(id, entry);
    }
    return entry;
  };
}

interface PendingAdmissions {
  keys: string[];
  clock: string;
  /** When the first admission of the call stops being waited for, in the script's clock ("" = no deadline). */
  deadline: string;
  /** Per admission: tokens, then the budgets of each scope. */
  args: Array<string | number>;
  settle: Array<{ resolve(out: number[]): void; reject(error: unknown): void }>;
}

interface PendingRefund {
  keys: string[];
  slot: number;
  day: number;
  tokens: number;
  settle: Array<{ resolve(): void; reject(error: unknown): void }>;
}

export class RedisRateLimiter implements RateLimiter {
  private readonly client: RedisClient & LimitCommands;
  private readonly prefix: string;
  private readonly now: (() => number) | null;
  /** Admissions of this turn of the event loop, by scopes + clock (see the header comment). */
  private readonly admissions = perTurn<PendingAdmissions>((batch) => this.sendAdmissions(batch));
  /** Refunds of this turn of the event loop, by scopes + slot + day (see the header comment). */
  private readonly refunds = perTurn<PendingRefund>((batch) => this.sendRefunds(batch));

  constructor(opts: RedisLimiterOptions) {
    for (const [numberOfKeys, name] of Object.entries(COMMANDS)) {
      opts.client.defineCommand(name, { lua: LIMITER_LUA, numberOfKeys: Number(numberOfKeys) });
    }
    this.client = opts.client as RedisClient & LimitCommands;
    this.prefix = opts.prefix ?? "llmproxy";
    this.now = opts.now ?? null;
    this.deadlineMs = opts.deadlineMs ?? null;
  }

  /** Redis's clock minus ours, as the latest decision reported it (null until one did). */
  private clockOffset: number | null = null;
  private readonly deadlineMs: number | null;

  /** The deadline of an admission queued now, in the script's clock; "" when unbounded or not yet known. */
  private deadlineArg(): string {
    if (this.deadlineMs === null) return "";
    if (this.now) return String(Math.floor(this.now()) + this.deadlineMs);
    if (this.clockOffset === null) return "";
    return String(Date.now() + this.clockOffset + this.deadlineMs);
  }

  private clockArg(): string {
    return this.now ? String(Math.floor(this.now())) : "";
  }

  /** Run the script on `keys` (all in one hash slot, see scopeKeys). */
  private run(keys: string[], args: Array<string | number>): Promise<number[]> {
    const name = COMMANDS[keys.length as keyof typeof COMMANDS];
    if (!name) return Promise.reject(new Error(`rate limiter: ${keys.length} scopes, expected 1 or 2`));
    // Never throws: the batch flushes rely on a rejection to settle every caller of a call.
    try {
      return this.client[name](...keys, ...args);
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /** Decide an admission; rejects when Redis fails (the resilient wrapper turns that into fail-open/closed). */
  async admit(req: AdmissionRequest): Promise<Admission> {
    const scopes = limitedScopes(req);
    if (scopes.length === 0) return { allowed: true, reservation: NOOP_RESERVATION, headers: {} };
    const keys = scopeKeys(this.prefix, req, scopes);
    const tokens = Math.max(0, Math.ceil(req.tokens));
    const args: Array<string | number> = [tokens];
    for (const s of scopes) {
      args.push(
        budgetArg(s.budget.requestsPerMinute),
        budgetArg(s.budget.tokensPerMinute),
        budgetArg(s.budget.tokensPerDay),
      );
    }
    const out = await this.decide(keys, this.clockArg(), args);
    const decision = parseDecision(out, scopes.length);
    // With request budgets only there is nothing to settle: skip the second round trip.
    const tokenBudgets = scopes.some(
      (s) => s.budget.tokensPerMinute !== null || s.budget.tokensPerDay !== null,
    );
    return admissionFromDecision(scopes, decision, () =>
      tokenBudgets
        ? this.reservation(
            keys,
            Math.floor(decision.now / SLOT_MS),
            Math.floor(decision.now / DAY_MS),
            tokens,
          )
        : NOOP_RESERVATION,
    );
  }

  private reservation(keys: string[], slot: number, day: number, reserved: number): Reservation {
    let settled = false;
    const adjust = async (actual: number) => {
      if (settled) return;
      settled = true;
      const delta = Math.max(0, Math.ceil(actual)) - reserved;
      if (delta === 0) return;
      if (delta < 0) return this.refund(keys, slot, day, -delta);
      await this.run(keys, ["adjust", this.clockArg(), slot, day, delta]);
    };
    return { reconcile: (actual) => adjust(actual), release: () => adjust(0) };
  }

  /** One admission's decision, sent with the other admissions of this turn on the same scopes. */
  private decide(keys: string[], clock: string, args: Array<string | number>): Promise<number[]> {
    const pending = this.admissions(`${keys.join(" ")} ${clock}`, () => ({
      keys,
      clock,
      // The call's first admission has the earliest deadline; the others were queued in the same turn.
      deadline: this.deadlineArg(),
      args: [],
      settle: [],
    }));
    for (const a of args) pending.args.push(a);
    return new Promise((resolve, reject) => pending.settle.push({ resolve, reject }));
  }

  private sendAdmissions(batch: PendingAdmissions[]): void {
    for (const a of batch) {
      const stride = a.args.length / a.settle.length;
      for (let first = 0; first < a.settle.length; first += MAX_BATCH) {
        const settle = a.settle.slice(first, first + MAX_BATCH);
        const args = a.args.slice(first * stride, (first + settle.length) * stride);
        this.run(a.keys, ["admit", a.clock, a.deadline, ...args]).then(
          (all) => {
            const late = Number(all[0]) === -1;
            // Redis's `now`: {-1, now} when late, else inside the first decision {len, allowed, now, …}.
            if (!this.now) this.clockOffset = Number(late ? all[1] : all[2]) - Date.now();
            if (late) {
              const error = new Error("rate limiter: the admission reached Redis after its deadline");
              for (const s of settle) s.reject(error);
              return;
            }
            // Each decision prefixed by its length, in the order the admissions were queued.
            let at = 0;
            for (const s of settle) {
              const n = Number(all[at]);
              s.resolve(all.slice(at + 1, at + 1 + n));
              at += 1 + n;
            }
          },
          (error: unknown) => settle.forEach((s) => s.reject(error)),
        );
      }
    }
  }

  private refund(keys: string[], slot: number, day: number, tokens: number): Promise<void> {
    const pending = this.refunds(`${keys.join(" ")} ${slot} ${day}`, () => ({
      keys,
      slot,
      day,
      tokens: 0,
      settle: [],
    }));
    pending.tokens += tokens;
    return new Promise((resolve, reject) => pending.settle.push({ resolve, reject }));
  }

  private sendRefunds(batch: PendingRefund[]): void {
    for (const r of batch) {
      this.run(r.keys, ["adjust", "", r.slot, r.day, -r.tokens]).then(
        () => r.settle.forEach((s) => s.resolve()),
        (error: unknown) => r.settle.forEach((s) => s.reject(error)),
      );
    }
  }

  /** The client belongs to whoever created it (see acquireRedis). */
  async close(): Promise<void> {}
}

export function parseDecision(out: number[], scopeCount: number): Decision {
  const allowed = Number(out[0]) === 1;
  const now = Number(out[1]);
  const base = allowed ? 2 : 5;
  const usage = [];
  for (let i = 0; i < scopeCount; i++) {
    const o = base + i * 5;
    usage.push({
      requests: Number(out[o]),
      tokens: Number(out[o + 1]),
      dayTokens: Number(out[o + 2]),
      newestRequestSlot: Number(out[o + 3]),
      newestTokenSlot: Number(out[o + 4]),
    });
  }
  if (allowed) return { allowed, now, usage };
  return {
    allowed,
    now,
    usage,
    rejected: {
      scopeIndex: Number(out[2]) - 1,
      budget: BUDGET_NAMES[Number(out[3]) - 1],
      retryMs: Number(out[4]),
    },
  };
}
