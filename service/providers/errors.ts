/**
 * How an upstream failure is classified: `retryable` failures (connection errors, timeouts, 429, 5xx) move on to
 * the next attempt or fallback; others (a 400 from the provider) go straight back to the client.
 */
import { errors as undiciErrors } from "undici";
import { ProxyError, UpstreamError, UpstreamTimeoutError } from "../errors";

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

function upstreamMessage(bodyText: string): {
  message: string | null;
  type: string | null;
  code: string | null;
} {
  try {
    const parsed = JSON.parse(bodyText) as { error?: { message?: unknown; type?: unknown; code?: unknown } };
    const e = parsed.error;
    if (e && typeof e === "object") {
      return {
        message: typeof e.message === "string" ? e.message.slice(0, 2000) : null,
        type: typeof e.type === "string" ? e.type : null,
        code: typeof e.code === "string" ? e.code : null,
      };
    }
  } catch {
    // not JSON: ignore the body, it may be an HTML error page
  }
  return { message: null, type: null, code: null };
}

export function httpFailure(
  provider: string,
  status: number,
  bodyText: string,
  retryAfter: string | null,
): ProviderFailure {
  const up = upstreamMessage(bodyText);
  const retryAfterMs = retryAfter && /^\d+(\.\d+)?$/.test(retryAfter) ? Number(retryAfter) * 1000 : null;
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
          headers: retryAfter ? { "retry-after": retryAfter } : {},
        },
      ),
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
