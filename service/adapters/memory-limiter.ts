/**
 * In-process rate limiter, and the rules shared with the Redis limiter (redis-limiter.ts runs the same algorithm in
 * Lua). Used by the embedded default — **single process only**: each process enforces its own budgets — and as the
 * fail-open fallback of the resilient limiter, with the budgets divided by the number of processes.
 *
 * Per-process shares (fail-open, or several processes without Redis): each budget is divided by the number of
 * processes, rounded down but never below 1 (0 stays blocked). A request needing more tokens than its share but no
 * more than the configured budget is admitted when this process's window for that scope holds no tokens (the minute
 * for tokens_per_minute, the UTC day for tokens_per_day) — at most one such request per process and window — rather
 * than refused for as long as Redis is away; otherwise it waits until the window is empty, which its Retry-After
 * says. So the processes together admit at most the budget only while it is at least the number of processes and
 * requests fit the shares: a share is never below 1 request (or token), and each process may admit one larger request
 * per window.
 *
 * Algorithm (both backends):
 * - Per scope (the key, and its team) one sliding window of 61 one-second slots counts requests and tokens. An
 *   admission at time `now` counts every slot that may hold an event less than 60 s old (slots cur-60 … cur), so no
 *   60-second span ever holds more admitted requests or reserved tokens than the per-minute budget: no boundary
 *   bursts as with fixed windows, and no 2× burst as with a full token bucket. The cost of 1-second slots is at most
 *   one second of extra wait.
 * - tokens_per_day is a calendar budget: one counter per UTC day, reset at midnight UTC.
 * - Every budget of the key and of its team is checked before anything is written: all or nothing, a rejected
 *   request consumes nothing. Budgets: null = unlimited, 0 = blocked.
 * - Reconciliation refunds the unused part of a reservation into the slot and day it was taken from (a refund into
 *   a slot that has already left the window changes nothing, correctly) and charges an overage now. Admission
 *   holds the budget for reservations; an overage (the provider used more than was reserved) is debt that delays
 *   the next admissions until it has left the window.
 */
import { LRUCache } from "lru-cache";
import { BUDGET_FIELDS, type Budget } from "../config";
import type { Admission, AdmissionRequest, RateLimiter, Reservation } from "../ports";

export const BUDGET_NAMES = ["requests_per_minute", "tokens_per_minute", "tokens_per_day"] as const;
export type BudgetName = (typeof BUDGET_NAMES)[number];
export type Scope = "key" | "team";

/** Slots of the sliding window: one per second, 61 so that any event younger than 60 s is counted. */
export const SLOTS = 61;
export const SLOT_MS = 1000;
export const MINUTE_MS = 60_000;
export const DAY_MS = 86_400_000;

/** A scope that has at least one budget set, in the order key, team. */
export interface LimitedScope {
  scope: Scope;
  id: string;
  /** The budget enforced: the configured one, or this process's share of `configured`. */
  budget: Budget;
  /** The configured budget when `budget` is this process's share of it (see the header comment). */
  configured?: Budget;
}

/** Usage of one scope at decision time (after the admission when admitted). */
export interface ScopeUsage {
  requests: number;
  tokens: number;
  dayTokens: number;
  /** The newest one-second slot of the window holding requests (tokens), -1 if none: the budget is whole once it left. */
  newestRequestSlot: number;
  newestTokenSlot: number;
}

/** What a backend decided; `admissionFromDecision` turns it into the port's Admission. */
export interface Decision {
  allowed: boolean;
  now: number;
  usage: ScopeUsage[];
  /** The binding budget when rejected: the one with the longest wait. */
  rejected?: { scopeIndex: number; budget: BudgetName; retryMs: number };
}

function hasLimit(b: Budget | null): b is Budget {
  return !!b && (b.requestsPerMinute !== null || b.tokensPerMinute !== null || b.tokensPerDay !== null);
}

/** The scopes to check: the key's and the team's, each only when one of its budgets is set. */
export function limitedScopes(req: AdmissionRequest): LimitedScope[] {
  const scopes: LimitedScope[] = [];
  if (hasLimit(req.keyBudget)) scopes.push({ scope: "key", id: req.keyId, budget: req.keyBudget });
  if (req.teamId && hasLimit(req.teamBudget))
    scopes.push({ scope: "team", id: req.teamId, budget: req.teamBudget });
  return scopes;
}

export function msToUtcMidnight(now: number): number {
  return (Math.floor(now / DAY_MS) + 1) * DAY_MS - now;
}

/** OpenAI's reset format: "250ms", "1s", "59s", "6m0s", "1h2m3s" (whole seconds rounded up from 1 s on). */
export function formatReset(ms: number): string {
  if (ms <= 0) return "0s";
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/**
 * Time until a minute budget with usage is whole again: its newest occupied slot leaves the window. After an
 * admission that is the current slot; for a rejection it may be older (nothing was admitted in the last seconds).
 */
function minuteResetMs(now: number, used: number, newestSlot: number): number {
  if (used <= 0 || newestSlot < 0) return 0;
  return Math.max(0, (newestSlot + SLOTS) * SLOT_MS - now);
}

/**
 * `x-ratelimit-*` headers as OpenAI sends them, for the most constraining budget of each kind (least remaining):
 * requests = requests_per_minute; tokens = tokens_per_minute or tokens_per_day of the key or its team.
 */
export function rateLimitHeaders(scopes: LimitedScope[], d: Decision): Record<string, string> {
  const headers: Record<string, string> = {};
  let req: { limit: number; remaining: number; reset: number } | null = null;
  let tok: { limit: number; remaining: number; reset: number } | null = null;
  scopes.forEach((s, i) => {
    const u = d.usage[i];
    const b = s.budget;
    if (b.requestsPerMinute !== null) {
      const remaining = Math.max(0, b.requestsPerMinute - u.requests);
      if (!req || remaining < req.remaining) {
        req = {
          limit: b.requestsPerMinute,
          remaining,
          reset: minuteResetMs(d.now, u.requests, u.newestRequestSlot),
        };
      }
    }
    if (b.tokensPerMinute !== null) {
      const remaining = Math.max(0, b.tokensPerMinute - u.tokens);
      if (!tok || remaining < tok.remaining) {
        tok = {
          limit: b.tokensPerMinute,
          remaining,
          reset: minuteResetMs(d.now, u.tokens, u.newestTokenSlot),
        };
      }
    }
    if (b.tokensPerDay !== null) {
      const remaining = Math.max(0, b.tokensPerDay - u.dayTokens);
      if (!tok || remaining < tok.remaining) {
        tok = { limit: b.tokensPerDay, remaining, reset: u.dayTokens > 0 ? msToUtcMidnight(d.now) : 0 };
      }
    }
  });
  const r = req as { limit: number; remaining: number; reset: number } | null;
  const t = tok as { limit: number; remaining: number; reset: number } | null;
  if (r) {
    headers["x-ratelimit-limit-requests"] = String(r.limit);
    headers["x-ratelimit-remaining-requests"] = String(r.remaining);
    headers["x-ratelimit-reset-requests"] = formatReset(r.reset);
  }
  if (t) {
    headers["x-ratelimit-limit-tokens"] = String(t.limit);
    headers["x-ratelimit-remaining-tokens"] = String(t.remaining);
    headers["x-ratelimit-reset-tokens"] = formatReset(t.reset);
  }
  return headers;
}

/** Build the port's Admission; rejections carry Retry-After (seconds, rounded up) and retry-after-ms. */
export function admissionFromDecision(
  scopes: LimitedScope[],
  d: Decision,
  reservation: () => Reservation,
): Admission {
  const headers = rateLimitHeaders(scopes, d);
  if (d.allowed) return { allowed: true, reservation: reservation(), headers };
  const r = d.rejected!;
  const retryAfterSeconds = Math.max(1, Math.ceil(r.retryMs / 1000));
  headers["retry-after"] = String(retryAfterSeconds);
  headers["retry-after-ms"] = String(Math.max(1, Math.ceil(r.retryMs)));
  const s = scopes[r.scopeIndex];
  return {
    allowed: false,
    budget: r.budget,
    scope: s.scope,
    limit: s.budget[BUDGET_FIELDS[r.budget]] ?? 0,
    retryAfterSeconds,
    headers,
  };
}

/** Wait for a budget that can never hold the request (0, or smaller than the request): the window's length. */
export function neverFitsRetryMs(budget: BudgetName, now: number): number {
  return budget === "tokens_per_day" ? msToUtcMidnight(now) : MINUTE_MS;
}

export const NOOP_RESERVATION: Reservation = {
  reconcile: async () => undefined,
  release: async () => undefined,
};

/**
 * Divide every set budget among `parts` processes, rounded down but at least 1 where the budget is positive (a
 * process cannot admit a fraction of a request; see the header comment for what that means together); 0 stays
 * blocked.
 */
export function divideBudget(b: Budget, parts: number): Budget {
  const div = (v: number | null) => (v === null || v === 0 ? v : Math.max(1, Math.floor(v / parts)));
  return {
    requestsPerMinute: div(b.requestsPerMinute),
    tokensPerMinute: div(b.tokensPerMinute),
    tokensPerDay: div(b.tokensPerDay),
  };
}

// ---------------------------------------------------------------- the in-process window

/** Sliding window of one scope: a ring of SLOTS one-second slots plus the UTC-day counter. */
class ScopeWindow {
  private readonly slotId = new Float64Array(SLOTS).fill(-1);
  private readonly req = new Float64Array(SLOTS);
  private readonly tok = new Float64Array(SLOTS);
  /** Oldest slot still counted. */
  private oldest = -1;
  requests = 0;
  tokens = 0;
  day = -1;
  dayTokens = 0;

  /** Drop slots that left the window and roll the day. */
  advance(now: number): void {
    const cur = Math.floor(now / SLOT_MS);
    const low = cur - (SLOTS - 1);
    if (this.oldest < 0 || low - this.oldest >= SLOTS) {
      this.slotId.fill(-1);
      this.req.fill(0);
      this.tok.fill(0);
      this.requests = 0;
      this.tokens = 0;
    } else {
      for (let s = this.oldest; s < low; s++) this.clear(s);
    }
    if (low > this.oldest) this.oldest = low;
    const day = Math.floor(now / DAY_MS);
    if (day !== this.day) {
      this.day = day;
      this.dayTokens = 0;
    }
  }

  private clear(s: number): void {
    const i = s % SLOTS;
    if (this.slotId[i] !== s) return;
    this.requests -= this.req[i];
    this.tokens -= this.tok[i];
    this.slotId[i] = -1;
    this.req[i] = 0;
    this.tok[i] = 0;
  }

  private index(s: number): number {
    const i = s % SLOTS;
    if (this.slotId[i] !== s) {
      this.slotId[i] = s;
      this.req[i] = 0;
      this.tok[i] = 0;
    }
    return i;
  }

  /** When (ms from now) enough of `used` has left the window to free `need`. */
  retryMs(now: number, need: number, kind: "req" | "tok"): number {
    const cur = Math.floor(now / SLOT_MS);
    const arr = kind === "req" ? this.req : this.tok;
    let freed = 0;
    for (let s = cur - (SLOTS - 1); s <= cur; s++) {
      const i = s % SLOTS;
      if (this.slotId[i] === s) freed += arr[i];
      if (freed >= need) return (s + SLOTS) * SLOT_MS - now;
    }
    return SLOTS * SLOT_MS;
  }

  /** The newest slot of the window holding requests or tokens; -1 when there is none. */
  newest(now: number, kind: "req" | "tok"): number {
    const cur = Math.floor(now / SLOT_MS);
    const arr = kind === "req" ? this.req : this.tok;
    for (let s = cur; s > cur - SLOTS; s--) {
      const i = s % SLOTS;
      if (this.slotId[i] === s && arr[i] > 0) return s;
    }
    return -1;
  }

  charge(now: number, requests: number, tokens: number): void {
    const i = this.index(Math.floor(now / SLOT_MS));
    this.req[i] += requests;
    this.tok[i] += tokens;
    this.requests += requests;
    this.tokens += tokens;
    this.dayTokens += tokens;
  }

  refund(slot: number, day: number, tokens: number): void {
    const i = slot % SLOTS;
    if (slot >= this.oldest && this.slotId[i] === slot) {
      const amount = Math.min(tokens, this.tok[i]);
      this.tok[i] -= amount;
      this.tokens -= amount;
    }
    if (day === this.day) this.dayTokens -= Math.min(tokens, this.dayTokens);
  }
}

export interface MemoryLimiterOptions {
  /** Clock in ms since the epoch. Default Date.now (tests pass a fake clock). */
  now?: () => number;
  /** Most scopes (keys + teams) tracked; the least recently used is forgotten beyond it. Default 100,000. */
  maxScopes?: number;
  /**
   * Processes that share the budgets, each with its own in-process limiter (replicas × workers): every budget is
   * divided by it, so together they stay near the configured budgets (see the header comment for how near).
   * Default 1.
   */
  processes?: number;
}

/**
 * Check every budget of the scopes at `now`; the binding rejection is the one with the longest wait. A request larger
 * than a per-process share (within the configured budget) passes alone: when the window holds no tokens.
 */
function decide(windows: ScopeWindow[], scopes: LimitedScope[], now: number, tokens: number): Decision {
  let rejected: Decision["rejected"];
  const consider = (scopeIndex: number, budget: BudgetName, retryMs: number) => {
    if (!rejected || retryMs > rejected.retryMs) rejected = { scopeIndex, budget, retryMs };
  };
  scopes.forEach((s, i) => {
    const w = windows[i];
    w.advance(now);
    const { requestsPerMinute: rpm, tokensPerMinute: tpm, tokensPerDay: tpd } = s.budget;
    const configured = s.configured ?? s.budget;
    if (rpm !== null && w.requests + 1 > rpm) {
      consider(i, "requests_per_minute", rpm < 1 ? MINUTE_MS : w.retryMs(now, w.requests + 1 - rpm, "req"));
    }
    if (tpm !== null && (tpm === 0 || w.tokens + tokens > tpm)) {
      if (tpm === 0 || tokens > (configured.tokensPerMinute ?? tpm))
        consider(i, "tokens_per_minute", MINUTE_MS);
      // Larger than the share: alone in the window, once everything in it has left.
      else if (tokens > tpm) {
        if (w.tokens > 0) consider(i, "tokens_per_minute", w.retryMs(now, w.tokens, "tok"));
      } else consider(i, "tokens_per_minute", w.retryMs(now, w.tokens + tokens - tpm, "tok"));
    }
    if (tpd !== null && (tpd === 0 || w.dayTokens + tokens > tpd)) {
      const alone = tpd > 0 && tokens > tpd && tokens <= (configured.tokensPerDay ?? tpd) && w.dayTokens <= 0;
      if (!alone) consider(i, "tokens_per_day", msToUtcMidnight(now));
    }
  });
  const usage = () =>
    windows.map((w) => ({
      requests: w.requests,
      tokens: w.tokens,
      dayTokens: w.dayTokens,
      newestRequestSlot: w.requests > 0 ? w.newest(now, "req") : -1,
      newestTokenSlot: w.tokens > 0 ? w.newest(now, "tok") : -1,
    }));
  if (rejected) return { allowed: false, now, usage: usage(), rejected };
  for (const w of windows) w.charge(now, 1, tokens);
  return { allowed: true, now, usage: usage() };
}

export class MemoryRateLimiter implements RateLimiter {
  private readonly windows: LRUCache<string, ScopeWindow>;
  private readonly now: () => number;
  private readonly processes: number;

  constructor(opts: MemoryLimiterOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.processes = Math.max(1, opts.processes ?? 1);
    this.windows = new LRUCache({ max: opts.maxScopes ?? 100_000 });
  }

  private window(s: LimitedScope): ScopeWindow {
    const id = `${s.scope}:${s.id}`;
    let w = this.windows.get(id);
    if (!w) {
      w = new ScopeWindow();
      this.windows.set(id, w);
    }
    return w;
  }

  /** Synchronous admission (the in-process decision never waits). */
  admitNow(req: AdmissionRequest): Admission {
    const configured = limitedScopes(req);
    if (configured.length === 0) return { allowed: true, reservation: NOOP_RESERVATION, headers: {} };
    const scopes =
      this.processes === 1
        ? configured
        : configured.map((s) => ({
            ...s,
            budget: divideBudget(s.budget, this.processes),
            configured: s.budget,
          }));
    const windows = scopes.map((s) => this.window(s));
    const now = this.now();
    const decision = decide(windows, scopes, now, req.tokens);
    return admissionFromDecision(scopes, decision, () =>
      this.reservation(scopes, Math.floor(now / SLOT_MS), Math.floor(now / DAY_MS), req.tokens),
    );
  }

  async admit(req: AdmissionRequest): Promise<Admission> {
    return this.admitNow(req);
  }

  private reservation(scopes: LimitedScope[], slot: number, day: number, reserved: number): Reservation {
    let settled = false;
    const adjust = (actual: number) => {
      if (settled) return;
      settled = true;
      const delta = Math.max(0, actual) - reserved;
      if (delta === 0) return;
      const now = this.now();
      for (const s of scopes) {
        const w = this.window(s);
        w.advance(now);
        if (delta < 0) w.refund(slot, day, -delta);
        else w.charge(now, 0, delta);
      }
    };
    return {
      reconcile: async (actual) => adjust(actual),
      release: async () => adjust(0),
    };
  }

  async close(): Promise<void> {
    this.windows.clear();
  }
}
