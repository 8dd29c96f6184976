/**
 * How an upstream failure is classified: `retryable` failures (connection errors, timeouts, 429, 5xx) move on to
 * the next attempt or fallback; others (a 400 from the provider) go straight back to the client.
 */
import { errors as undiciErrors } from "undici";
import { ProxyError, UpstreamError, UpstreamTimeoutError } from "../errors";
import { redactSecrets } from "../lib/secrets";

export class ProviderFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    /** What the client gets if this is the last failure. */
    readonly clientError: ProxyError,
    readonly retryAfterMs: number | null = null,
    /**
     * The target's own setup is at fault (its credentials refused, its model unknown), not the request: another
     * target of a load-balanced pool may well serve it.
     */
    readonly targetFault = false,
  ) {
    super(message);
    this.name = "ProviderFailure";
  }
}

/** An upstream's error type or code, when it is a short identifier with no credential in it. */
function identifier(value: unknown): string | null {
  if (typeof value !== "string" || !/^[A-Za-z0-9_.:-]{1,64}$/.test(value)) return null;
  return redactSecrets(value) === value ? value : null;
}

/** An upstream's `param`, when it names a field (`input`, `messages[0].content`), not any text the upstream chose. */
function paramOf(value: unknown): string | null {
  return typeof value === "string" && /^[A-Za-z0-9_.[\]-]{1,128}$/.test(value) ? value : null;
}

function upstreamMessage(bodyText: string): {
  message: string | null;
  type: string | null;
  code: string | null;
  param: string | null;
} {
  try {
    const parsed = JSON.parse(bodyText) as {
      error?: { message?: unknown; type?: unknown; code?: unknown; param?: unknown };
    };
    const e = parsed.error;
    if (e && typeof e === "object") {
      // Passed on to the client, the logs and the usage row: never a credential the provider echoed, and a type and
      // code only when they look like one (a short identifier), not any string the upstream chose.
      return {
        message: typeof e.message === "string" ? redactSecrets(e.message.slice(0, 2000)) : null,
        type: identifier(e.type),
        code: identifier(e.code),
        param: paramOf(e.param),
      };
    }
  } catch {
    // not JSON: ignore the body, it may be an HTML error page
  }
  return { message: null, type: null, code: null, param: null };
}

const MAX_RETRY_AFTER_MS = 24 * 3600 * 1000;

/** A provider's Retry-After (seconds, or an HTTP date) in ms, within [0, 24 h]; null when absent or unreadable. */
export function retryAfterMsOf(value: string | null, now = Date.now()): number | null {
  if (!value) return null;
  const v = value.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(v)) ms = Number(v) * 1000;
  else {
    const at = Date.parse(v);
    if (!Number.isFinite(at) || !/[a-z]/i.test(v)) return null;
    ms = Math.max(0, at - now);
  }
  return Math.min(ms, MAX_RETRY_AFTER_MS);
}

export function httpFailure(
  provider: string,
  status: number,
  bodyText: string,
  retryAfter: string | null,
): ProviderFailure {
  const up = upstreamMessage(bodyText);
  const retryAfterMs = retryAfterMsOf(retryAfter);
  if (status < 400) {
    // A redirect: the provider's base_url points at the wrong place (undici does not follow redirects, nor should a
    // proxy holding credentials). Not the client's fault; the fallback may serve.
    return new ProviderFailure(
      `${provider}: ${status}`,
      true,
      new UpstreamError(
        `The upstream provider answered with a redirect (HTTP ${status}); check its base_url.`,
      ),
    );
  }
  if (status === 429) {
    return new ProviderFailure(
      `${provider}: 429`,
      true,
      new ProxyError(
        429,
        "rate_limit_error",
        "upstream_rate_limited",
        "The upstream provider is rate limiting requests.",
        {
          // Passed on in seconds, as read: never a negative, unparsable or far-future value from the provider.
          headers: retryAfterMs !== null ? { "retry-after": String(Math.ceil(retryAfterMs / 1000)) } : {},
        },
      ),
      retryAfterMs,
    );
  }
  if (status === 529 || (status >= 500 && up.type === "overloaded_error")) {
    // Anthropic's overload: kept as 529, which /v1/messages reports as `overloaded_error` (Anthropic clients retry
    // it) — the same as an overload event at the start of a stream.
    return new ProviderFailure(
      `${provider}: ${status}`,
      true,
      new UpstreamError("The upstream provider is overloaded.", "upstream_overloaded", {
        status: 529,
        headers: retryAfterMs !== null ? { "retry-after": String(Math.ceil(retryAfterMs / 1000)) } : {},
      }),
      retryAfterMs,
    );
  }
  if (status >= 500) {
    return new ProviderFailure(
      `${provider}: ${status}`,
      true,
      new UpstreamError(`The upstream provider failed (HTTP ${status}).`),
    );
  }
  if (status === 401 || status === 403) {
    // The proxy's own provider credentials were refused: the client cannot fix that, and it must not see details.
    return new ProviderFailure(
      `${provider}: ${status}`,
      false,
      new UpstreamError("The upstream provider refused the proxy's credentials.", "upstream_auth_error"),
      null,
      true,
    );
  }
  // 400, 404, 422 …: the request itself is wrong; pass the provider's explanation through.
  return new ProviderFailure(
    `${provider}: ${status}`,
    false,
    new ProxyError(
      status,
      up.type ?? "invalid_request_error",
      up.code ?? "upstream_rejected",
      up.message ?? `The upstream provider rejected the request (HTTP ${status}).`,
      { param: up.param },
    ),
    null,
    status === 404,
  );
}

/** A request that got no (complete) answer; undici's head and body timeouts are the attempt timing out. */
export function networkFailure(provider: string, error: unknown): ProviderFailure {
  if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) {
    return new ProviderFailure(`${provider}: timeout`, true, new UpstreamTimeoutError());
  }
  const code = (error as { code?: string }).code ?? (error as Error).name;
  return new ProviderFailure(
    `${provider}: ${code}`,
    true,
    new UpstreamError("Could not reach the upstream provider.", "upstream_unreachable", { cause: error }),
  );
}
