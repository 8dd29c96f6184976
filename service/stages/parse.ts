/**
 * Parse and validate the request body (bounded read, zod), resolve the model to a deployment (404 when unknown),
 * and keep a private copy of the body that later stages may rewrite. Fields the proxy does not know pass through.
 */
import type { Middleware, ParameterizedContext } from "koa";
import { z } from "zod";
import type { Config } from "../config";
import { InvalidRequestError, NotFoundError, PermissionError } from "../errors";
import { modelAllowed } from "./auth";
import { messagesToChat, type MessagesRequest } from "../lib/anthropic-messages";
import { readJsonBody } from "../lib/body";
import { decodeTokens } from "../lib/tokens";
import {
  customToolNames,
  responseEcho,
  responsesToChat,
  type ResponsesRequest,
} from "../lib/openai-responses";
import type { ProviderRegistry } from "../providers/registry";
import type { ProxyState } from "../state";
import type { ChatCompletionRequest, EmbeddingRequest } from "../types";

// Text the content policy and PII scrub read must be a string wherever it is: a part's `text`, a tool call's (and the
// legacy function_call's) `arguments` and `name`. An array or an object there slipped past both (and a null
// `function` was a 500 in the PII stage).
const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() });
const functionCall = z.looseObject({ name: z.string(), arguments: z.string() });
const message = z.looseObject({
  role: z.string().min(1),
  content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
  name: z.string().optional(),
  tool_calls: z.array(z.looseObject({ function: functionCall.optional() })).optional(),
  function_call: functionCall.nullable().optional(),
  tool_call_id: z.string().optional(),
});
const optionalInt = (min: number) => z.number().int().min(min).nullable().optional();

export const chatSchema = z.looseObject({
  model: z.string().min(1),
  messages: z.array(message).min(1),
  stream: z.boolean().nullable().optional(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  max_tokens: optionalInt(1),
  max_completion_tokens: optionalInt(1),
  n: optionalInt(1),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  tools: z
    .array(z.looseObject({ type: z.string(), function: z.looseObject({ name: z.string() }).optional() }))
    .optional(),
});

type Json = Record<string, unknown>;
// An own `__proto__` key (JSON.parse makes one) is left to zod, which drops it.
const isObject = (v: unknown): v is Json =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !Object.hasOwn(v, "__proto__");
const isOptBool = (v: unknown) => v === undefined || v === null || typeof v === "boolean";
const isOptInt = (v: unknown, min: number) =>
  v === undefined || v === null || (Number.isSafeInteger(v) && (v as number) >= min);
const isOptNumber = (v: unknown, min: number, max: number) =>
  v === undefined || v === null || (typeof v === "number" && Number.isFinite(v) && v >= min && v <= max);
const isTyped = (v: unknown) => isObject(v) && typeof v.type === "string";
const isPart = (v: unknown) =>
  isTyped(v) && ((v as Json).text === undefined || typeof (v as Json).text === "string");
const isFunctionCall = (v: unknown) =>
  isObject(v) && typeof v.name === "string" && typeof v.arguments === "string";
const isToolCall = (v: unknown) => isObject(v) && (v.function === undefined || isFunctionCall(v.function));
const isTool = (v: unknown) =>
  isTyped(v) &&
  ((v as Json).function === undefined ||
    (isObject((v as Json).function) && typeof ((v as Json).function as Json).name === "string"));

function isPlainMessage(m: unknown): boolean {
  if (!isObject(m) || typeof m.role !== "string" || m.role.length === 0) return false;
  const c = m.content;
  if (!(c === undefined || c === null || typeof c === "string" || (Array.isArray(c) && c.every(isPart))))
    return false;
  const fc = m.function_call;
  return (
    (m.name === undefined || typeof m.name === "string") &&
    (m.tool_calls === undefined || (Array.isArray(m.tool_calls) && m.tool_calls.every(isToolCall))) &&
    (fc === undefined || fc === null || isFunctionCall(fc)) &&
    (m.tool_call_id === undefined || typeof m.tool_call_id === "string")
  );
}

/**
 * True only for a body `chatSchema` accepts, checked by hand: zod's walk over every message and part is a
 * measurable share of a proxied request's CPU, and nearly every body is valid. Anything this does not accept goes
 * through zod, which then accepts it or names the first bad field; the two must agree (test/service/stages).
 */
export function isPlainChat(raw: unknown): raw is ChatCompletionRequest {
  if (!isObject(raw) || typeof raw.model !== "string" || raw.model.length === 0) return false;
  const { messages, stream_options: so, tools } = raw;
  return (
    Array.isArray(messages) &&
    messages.length > 0 &&
    messages.every(isPlainMessage) &&
    isOptBool(raw.stream) &&
    (so === undefined ||
      so === null ||
      (isObject(so) && (so.include_usage === undefined || typeof so.include_usage === "boolean"))) &&
    isOptInt(raw.max_tokens, 1) &&
    isOptInt(raw.max_completion_tokens, 1) &&
    isOptInt(raw.n, 1) &&
    isOptNumber(raw.temperature, 0, 2) &&
    isOptNumber(raw.top_p, 0, 1) &&
    (tools === undefined || (Array.isArray(tools) && tools.every(isTool)))
  );
}

const block = z.looseObject({ type: z.string() });
const blocks = z.union([z.string(), z.array(block)]);

/** The Anthropic Messages request (POST /v1/messages); translated to the chat body the stages work on. */
export const messagesSchema = z.looseObject({
  model: z.string().min(1),
  max_tokens: z.number().int().min(1),
  messages: z.array(z.looseObject({ role: z.string().min(1), content: blocks })).min(1),
  system: blocks.optional(),
  stream: z.boolean().optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().min(0).max(1).optional(),
  stop_sequences: z.array(z.string()).optional(),
  tools: z.array(z.looseObject({ name: z.string().min(1) })).optional(),
});

/** The OpenAI Responses request (POST /v1/responses); translated to the chat body the stages work on. */
const responsesSchema = z.looseObject({
  model: z.string().min(1),
  // Absent: a 400 naming it, after the checks for what may stand in for it (`prompt`) — see responsesToChat.
  input: z
    .union([z.string(), z.array(z.looseObject({}))])
    .nullable()
    .optional(),
  instructions: z.string().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  max_output_tokens: z.number().int().min(1).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  tools: z
    .array(z.looseObject({ type: z.string(), function: z.looseObject({ name: z.string() }).optional() }))
    .optional(),
});

// OpenAI's rules for the input: no empty text, token ids are non-negative integers.
const embeddingText = z.string().min(1, "must not be empty");
const tokenId = z.number().int().min(0);
const embeddingSchema = z.looseObject({
  model: z.string().min(1),
  input: z.union([
    embeddingText,
    z.array(embeddingText).min(1),
    z.array(tokenId).min(1),
    z.array(z.array(tokenId).min(1)).min(1),
  ]),
  encoding_format: z.enum(["float", "base64"]).nullable().optional(),
  dimensions: z.number().int().min(1).nullable().optional(),
});

function invalid(error: z.ZodError, raw: unknown): InvalidRequestError {
  const issue = error.issues[0];
  const param = issue.path.map(String).join(".") || null;
  // Absent, whatever zod calls it (a union reports invalid_union): "required", not "Invalid input".
  const missing =
    issue.path.length === 1 &&
    raw !== null &&
    typeof raw === "object" &&
    (raw as Record<string, unknown>)[String(issue.path[0])] === undefined;
  return new InvalidRequestError(
    `Invalid request: ${param ? `\`${param}\`: ` : ""}${missing ? "required" : issue.message}.`,
    missing ? "missing_required_parameter" : "invalid_value",
    param,
  );
}

export interface ParseDeps {
  config: Config;
  providers: ProviderRegistry;
}

/** The key (and its team) may use only their listed models: 403 `model_not_allowed` naming the model. */
export function requireModelAccess(ctx: ParameterizedContext<ProxyState>, model: string): void {
  if (!modelAllowed(ctx.state.principal, model)) {
    throw new PermissionError(
      `This API key may not use the model \`${model}\`; ask an administrator to add it to the key's or the team's allowed_models.`,
      "model_not_allowed",
      "model",
    );
  }
}

export function resolveModel(deps: ParseDeps, model: string, kind: "chat" | "embedding") {
  const deployment = deps.providers.resolve(model);
  if (!deployment || (deployment.kind !== kind && !deps.config.passthroughProvider)) {
    throw new NotFoundError(
      `The model \`${model}\` does not exist or you do not have access to it.`,
      "model_not_found",
      "model",
    );
  }
  return deployment;
}

/**
 * The body read (bounded) and validated against `schema`, a 400 naming the first bad field otherwise; the requested
 * model is noted on the usage row as early as it is known (even if the body is invalid).
 */
export async function readValidBody<T extends z.ZodType>(
  ctx: ParameterizedContext<ProxyState>,
  deps: ParseDeps,
  schema: T,
  /** A check that accepts only bodies `schema` accepts: those skip zod (the body is passed on as parsed). */
  plain?: (raw: unknown) => boolean,
): Promise<z.infer<T>> {
  const raw = await readJsonBody(ctx, deps.config.server.bodyLimitBytes);
  if (raw !== null && typeof raw === "object" && typeof (raw as { model?: unknown }).model === "string") {
    ctx.state.usage.requestedModel = (raw as { model: string }).model;
  }
  if (plain?.(raw)) return raw as z.infer<T>;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw invalid(parsed.error, raw);
  return parsed.data;
}

/** Whether the PII scrub or the content policy reads what the provider will see. */
const readsInput = (deps: ParseDeps) =>
  deps.config.pii.enabled || deps.config.contentPolicy.blockedPatterns.length > 0;

/** Content parts the PII scrub and the content policy cannot read (a file's bytes, audio). */
const OPAQUE_PARTS = new Set(["file", "input_audio"]);

/**
 * With PII scrubbing or a content policy on, a part neither can read would reach the provider unchecked: a 400
 * naming it, as /v1/messages does for PDF documents and /v1/responses for files. Only on such configurations: without
 * them the proxy checks nothing in any part and passes files and audio on.
 */
function refuseOpaqueParts(deps: ParseDeps, body: ChatCompletionRequest): void {
  if (!readsInput(deps)) return;
  body.messages.forEach((m, i) => {
    if (!Array.isArray(m.content)) return;
    (m.content as Array<{ type?: unknown } | null>).forEach((part, j) => {
      if (typeof part?.type === "string" && OPAQUE_PARTS.has(part.type))
        throw new InvalidRequestError(
          `A \`${part.type}\` content part is not supported by this proxy's configuration: the PII scrub and the content policy cannot read it. Send its text instead.`,
          "unsupported_parameter",
          `messages[${i}].content[${j}]`,
        );
    });
  });
}

function acceptChat(
  ctx: ParameterizedContext<ProxyState>,
  deps: ParseDeps,
  body: ChatCompletionRequest,
): void {
  refuseOpaqueParts(deps, body);
  ctx.state.usage.stream = body.stream === true;
  ctx.state.deployment = resolveModel(deps, body.model, "chat");
  requireModelAccess(ctx, ctx.state.deployment.name);
  ctx.state.chat = body;
}

export function createParseChat(deps: ParseDeps): Middleware<ProxyState> {
  return async function parseChat(ctx, next) {
    const data = await readValidBody(ctx, deps, chatSchema, isPlainChat);
    acceptChat(ctx, deps, data as ChatCompletionRequest);
    return next();
  };
}

/** POST /v1/responses: an OpenAI Responses request, translated to chat (lib/openai-responses.ts). */
export function createParseResponses(deps: ParseDeps): Middleware<ProxyState> {
  return async function parseResponses(ctx, next) {
    const data = await readValidBody(ctx, deps, responsesSchema);
    acceptChat(ctx, deps, responsesToChat(data as ResponsesRequest));
    const custom = customToolNames(data);
    if (custom.size > 0) ctx.state.customTools = [...custom];
    ctx.state.responseEcho = responseEcho(data);
    return next();
  };
}

/** POST /v1/messages: an Anthropic Messages request, translated to chat (lib/anthropic-messages.ts). */
export function createParseMessages(deps: ParseDeps): Middleware<ProxyState> {
  return async function parseMessages(ctx, next) {
    const data = await readValidBody(ctx, deps, messagesSchema);
    acceptChat(ctx, deps, messagesToChat(data as MessagesRequest));
    return next();
  };
}

/**
 * With PII scrubbing or a content policy on, input given as token ids would reach the provider unchecked (an e-mail
 * address or a blocked phrase, encoded). For OpenAI's embedding models, whose tokenizer is known exactly, the ids
 * are decoded and the text goes on in their place, checked like any text (LangChain's OpenAIEmbeddings sends ids by
 * default); for any other model they are a 400, like the unreadable chat parts.
 */
function tokenInputAsText(
  deps: ParseDeps,
  model: string,
  input: EmbeddingRequest["input"],
): EmbeddingRequest["input"] {
  if (!readsInput(deps)) return input;
  if (!Array.isArray(input) || input.every((item) => typeof item === "string")) return input;
  const decoded =
    typeof input[0] === "number"
      ? decodeTokens(model, input as number[])
      : (input as number[][]).map((ids) => decodeTokens(model, ids));
  if (decoded === null || (Array.isArray(decoded) && decoded.some((text) => text === null)))
    throw new InvalidRequestError(
      `Embedding input given as token ids is supported here only for OpenAI's embedding models: the PII scrub and the content policy cannot read ids of \`${model}\`. Send the text instead (LangChain: check_embedding_ctx_length=False).`,
      "unsupported_parameter",
      "input",
    );
  return decoded as string | string[];
}

export function createParseEmbeddings(deps: ParseDeps): Middleware<ProxyState> {
  return async function parseEmbeddings(ctx, next) {
    const data = await readValidBody(ctx, deps, embeddingSchema);
    ctx.state.deployment = resolveModel(deps, data.model, "embedding");
    requireModelAccess(ctx, ctx.state.deployment.name);
    const request = data as EmbeddingRequest;
    ctx.state.embedding = {
      ...request,
      input: tokenInputAsText(deps, ctx.state.deployment.model, request.input),
    };
    return next();
  };
}
