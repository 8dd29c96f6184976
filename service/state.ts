/**
 * `ctx.state` of every request: the only way stages talk to each other. Each field names the stage that writes it.
 */
import type { Logger } from "pino";
import type { DeploymentConfig } from "./config";
import type { ApiKeyRecord, LimitOverrides, Reservation, UsageRow } from "./ports";
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, EmbeddingRequest } from "./types";

export type Principal =
  | {
      kind: "key";
      key: ApiKeyRecord;
      /** The team's overrides (null when the key has no team). */
      teamLimits: LimitOverrides | null;
      /** The team's model list (null or absent: no team, or every model). */
      teamAllowedModels?: string[] | null;
      /** The team's monthly budget in USD (null or absent: no team, or no budget). */
      teamBudgetUsdPerMonth?: number | null;
    }
  | { kind: "master" };

/** What the upstream stage produced; later stages wrap it (PII restore, cache store, reconcile). */
export type ProxyResult =
  | {
      kind: "json";
      body: ChatCompletion | Record<string, unknown>;
      /**
       * `body`'s JSON text as the upstream sent it (or as the cache stored it), written to the client instead of
       * serializing `body` again. A stage that changes `body` (PII restore) must drop it.
       */
      text?: string;
    }
  | {
      kind: "stream";
      chunks: AsyncIterable<ChatCompletionChunk>;
      /** Whether the client asked for `stream_options.include_usage` (the usage chunk is passed on only then). */
      includeUsage: boolean;
    };

export interface ProxyState {
  /** request-context: accepted from `x-request-id` or generated. */
  requestId: string;
  /** request-context: child logger carrying the request id. */
  log: Logger;
  /** request-context: performance.now() at arrival (ms). */
  startedAt: number;
  /** request-context: the row recorded when the response has finished; stages fill its fields. */
  usage: UsageRow;
  /** route: which API this is ("chat", "embeddings", ...); also the metrics label. */
  route: string;
  /** auth */
  principal?: Principal;
  /** route (chat): the validated body, a private copy that stages may rewrite before the upstream call. */
  chat?: ChatCompletionRequest;
  /** route (responses): names of the request's custom tools (their calls go back as custom_tool_call items). */
  customTools?: string[];
  /** route (responses): the request fields a Response repeats (tools, tool_choice, instructions …). */
  responseEcho?: Record<string, unknown>;
  /** route (embeddings): the validated body. */
  embedding?: EmbeddingRequest;
  /** route: the deployment the client asked for (after alias/passthrough resolution). */
  deployment?: DeploymentConfig;
  /** upstream: the deployment that answered (after fallbacks); its prices make the usage row's cost. */
  served?: DeploymentConfig;
  /** token-count: prompt tokens of the final request (after RAG). */
  promptTokens?: number;
  /** Characters of answer text (content, tool-call arguments) streamed so far: the estimate of a cut stream. */
  streamed?: { chars: number; reported: boolean };
  /**
   * upstream: the deployment that holds this request — its latest attempt was sent there and did not fail (it
   * answered, or was still under way when the client left); null after a failed attempt. Such a request is billed
   * even if its usage never reaches us, so a client that leaves keeps its token reservation (rate-limit) and its row
   * gets an estimate priced at this deployment (request-context).
   */
  sentTo?: DeploymentConfig | null;
  /** token-count: completion allowance reserved (max_tokens / max_completion_tokens or the default). */
  completionAllowance?: number;
  /** rate-limit: the admission's reservation (reconciled or released by the same stage). */
  reservation?: Reservation;
  /**
   * Headers stages add to the answer (x-ratelimit-*, x-cache), as a flat `[name, value, …]` list: respond.ts sends
   * them in its one writeHead, request-context on whatever Koa writes (errors).
   */
  responseHeaders?: string[];
  /** pii: entity counts for the usage row and metrics. */
  piiCounts?: Record<string, number>;
  /** pii: the reversible placeholders issued for this request, in issue order (the cache keys on them canonically). */
  piiPlaceholders?: string[];
  /** rag: number of chunks added. */
  ragChunks?: number;
  /** cache: "hit" | "miss" | "bypass". */
  cacheStatus?: "hit" | "miss" | "bypass";
  /** upstream (or cache on a hit): the response to write. */
  result?: ProxyResult;
}

/** Add headers to the answer (see ProxyState.responseHeaders). */
export function addResponseHeaders(state: ProxyState, headers: Record<string, string>): void {
  const list = (state.responseHeaders ??= []);
  for (const name in headers) list.push(name, headers[name]);
}

export type { ChatCompletionChunk };
