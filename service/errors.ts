/**
 * One error family → one JSON envelope. Stages throw ProxyError subclasses; the outermost handler
 * (stages/errors.ts) writes `{ "error": { "message", "type", "code", "param" } }` as OpenAI does.
 */

export interface ErrorBody {
  error: { message: string; type: string; code: string | null; param: string | null };
}

export class ProxyError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    type: string,
    code: string | null,
    message: string,
    opts: { param?: string | null; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = new.target.name;
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = opts.param ?? null;
    this.headers = opts.headers ?? {};
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

/** 400: the request is malformed or invalid. */
export class InvalidRequestError extends ProxyError {
  constructor(message: string, code: string | null = "invalid_request", param: string | null = null) {
    super(400, "invalid_request_error", code, message, { param });
  }
}

/** 401: missing, unknown, revoked or expired key. */
export class AuthenticationError extends ProxyError {
  constructor(message = "Invalid API key provided.", code = "invalid_api_key") {
    super(401, "authentication_error", code, message);
  }
}

/** 403: the key lacks the scope for this endpoint. */
export class PermissionError extends ProxyError {
  constructor(message: string, code = "insufficient_scope", param: string | null = null) {
    super(403, "permission_error", code, message, { param });
  }
}

/** 404: unknown model or resource. */
export class NotFoundError extends ProxyError {
  constructor(message: string, code = "not_found", param: string | null = null) {
    super(404, "invalid_request_error", code, message, { param });
  }
}

export class ConflictError extends ProxyError {
  constructor(message: string, code = "conflict") {
    super(409, "invalid_request_error", code, message);
  }
}

/** 413: body over the configured limit. */
export class PayloadTooLargeError extends ProxyError {
  constructor(limit: number) {
    super(
      413,
      "invalid_request_error",
      "request_too_large",
      `Request body exceeds the limit of ${limit} bytes.`,
    );
  }
}

/** 429: a budget is exhausted. Headers carry Retry-After and x-ratelimit-*. */
export class RateLimitError extends ProxyError {
  constructor(message: string, budget: string, headers: Record<string, string>) {
    super(429, "rate_limit_error", "rate_limit_exceeded", message, { param: budget, headers });
  }
}

/**
 * 429 `insufficient_quota`: a monthly spend budget is used up (OpenAI answers an exhausted quota the same way). No
 * Retry-After: waiting does not help before the month ends.
 */
export class BudgetExceededError extends ProxyError {
  constructor(message: string, budget: "key" | "team") {
    super(429, "insufficient_quota", "budget_exceeded", message, { param: `${budget}.budget_usd_per_month` });
  }
}

/** 502: the upstream failed or answered with an error. */
export class UpstreamError extends ProxyError {
  constructor(
    message: string,
    code = "upstream_error",
    opts: { cause?: unknown; status?: number; headers?: Record<string, string> } = {},
  ) {
    super(opts.status ?? 502, "upstream_error", code, message, { cause: opts.cause, headers: opts.headers });
  }
}

/**
 * 499 (nginx's "client closed request"): the client went away before the answer. Never sent (there is nobody to
 * send it to); it is what the usage row, the metrics and the access line say.
 */
export class ClientClosedError extends ProxyError {
  constructor() {
    super(499, "client_error", "client_closed_request", "The client closed the request.");
  }
}

/** 504: every attempt timed out. */
export class UpstreamTimeoutError extends ProxyError {
  constructor(message = "The upstream did not answer in time.") {
    super(504, "upstream_error", "upstream_timeout", message);
  }
}

/** 503: a dependency is unavailable (draining, rate limiter fail-closed, knowledge base off). */
export class ServiceUnavailableError extends ProxyError {
  constructor(message: string, code = "service_unavailable", headers: Record<string, string> = {}) {
    super(503, "service_unavailable", code, message, { headers });
  }
}

export function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "";
}

/** Failures that pass: the server is not up yet, is starting, restarting, or out of connections for a moment. */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ENOTFOUND", // a Kubernetes Service's DNS name can appear after the pod starts
  "EAI_AGAIN",
  "57P03", // cannot_connect_now: the database system is starting up
  "57P01", // admin_shutdown (a failover in progress)
  "53300", // too_many_connections
]);

/** Whether a PostgreSQL call failed because the server cannot be reached right now (not because of the query). */
export function isDatabaseUnreachable(error: unknown): boolean {
  if (UNREACHABLE.has(codeOf(error))) return true;
  // pg's and pg-pool's own timeouts and dropped connections have no code.
  return /timeout expired|timeout exceeded when trying to connect|Connection terminated|Query read timeout/i.test(
    (error as Error | null)?.message ?? "",
  );
}

/** 503 `database_unavailable` with Retry-After: PostgreSQL cannot be reached where the request needs it. */
export function databaseUnavailable(message: string): ServiceUnavailableError {
  return new ServiceUnavailableError(message, "database_unavailable", { "retry-after": "1" });
}

/**
 * Anything that is not a ProxyError becomes a 500 whose internals are hidden — except PostgreSQL being unreachable
 * (the admin API, usage reports, a first key lookup during an outage): a 503 the client may retry, as /readyz says.
 */
export function toProxyError(error: unknown): ProxyError {
  if (error instanceof ProxyError) return error;
  if (isDatabaseUnreachable(error)) {
    const e = databaseUnavailable("The database is unreachable right now; retry shortly.");
    return new ProxyError(e.status, e.type, e.code, e.message, { cause: error, headers: e.headers });
  }
  return new ProxyError(500, "internal_error", "internal_error", "Internal server error.", { cause: error });
}
