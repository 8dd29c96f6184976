/**
 * The Anthropic Messages API as an inbound wire format (`POST /v1/messages`, for the Anthropic SDKs and Claude
 * Code): a Messages request becomes the chat-completions request every stage works on, and the chat result goes
 * back as a Message — JSON or the Messages event stream. Routing, PII, policy, limits, cache and usage are the
 * chat pipeline's, unchanged; only the two ends speak Anthropic.
 *
 * Request: `system` (string or text blocks) → a system message; text and image blocks (base64 → data URL, url) →
 * content parts; `tool_use` blocks → assistant `tool_calls`; `tool_result` blocks → `tool` messages, placed right
 * after the assistant turn as chat completions require; `max_tokens`, `stop_sequences`, `metadata.user_id`, `tools`,
 * `tool_choice` (+ `disable_parallel_tool_use`), `output_config.format` (→ `response_format` json_schema), `stream`
 * and, from older clients, `temperature` / `top_p` are translated; `output_config.effort`, `thinking` and `top_k` are
 * dropped (no chat-completions equivalent every model accepts); text documents become text (title and context
 * first; citations are not produced); PDF and file documents and server tools are a 400 naming the field.
 */
import { randomUUID } from "node:crypto";
import { InvalidRequestError, type ProxyError } from "../errors";
import { checkOptionalBoolean, invalid, isObject, optionalObject, optionalString } from "./input-check";
import { chatUsage, walkChunks, type ChunkWalker } from "./chunk-blocks";
import { UNMAPPED_STOP_REASONS } from "../providers/anthropic-translate";
import { promptParts } from "./pricing";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./body";
import {
  TOOL_ERROR,
  TOOL_ERROR_PREFIX,
  type ChatCompletion,
  type ChatCompletionRequest,
  type ChatMessage,
  type ContentPart,
  type ToolCall,
} from "../types";

type Block = { type: string; [k: string]: unknown };
type Content = string | Block[];

export interface MessagesRequest {
  model: string;
  max_tokens: number;
  messages: Array<{ role: string; content: Content }>;
  system?: Content;
  [extra: string]: unknown;
}

const unsupported = (param: string, what: string) =>
  new InvalidRequestError(`${what} is not supported by this proxy.`, "unsupported_parameter", param);

// ---------------------------------------------------------------- shape checks
// Every field the translation reads is checked for its type first: a wrong-typed value from the client is a 400
// naming the field, never a TypeError (a 500) or "[object Object]" sent on as text.

/** A content block: an object with a string `type`. */
function contentBlock(v: unknown, param: string, code?: string): Block {
  if (!isObject(v)) throw invalid(param, "an object with a `type` (a content block)", v, code);
  if (typeof v.type !== "string") throw invalid(`${param}.type`, "a string", v.type, code);
  return v as Block;
}

/** The text of a block where only text blocks may stand. */
function textOfBlock(b: Block, param: string, code?: string): string {
  if (b.type !== "text") throw unsupported(param, `A \`${b.type}\` block here`);
  if (typeof b.text !== "string") throw invalid(`${param}.text`, "a string", b.text, code);
  return b.text;
}

/**
 * Content where only text may stand (system, tool results, text documents) as one text. `code` is the error code for
 * a malformed value (a text document's content that is not text is refused as unsupported, as other documents are).
 */
function blocksText(content: unknown, param: string, code?: string): string {
  if (content === undefined) return "";
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw invalid(param, "a string or a list of content blocks", content, code);
  return content
    .map((b: unknown, i) => textOfBlock(contentBlock(b, `${param}[${i}]`, code), `${param}[${i}]`, code))
    .join("\n");
}

function imagePart(block: Block, param: string): ContentPart {
  const at = `${param}.source`;
  const source = block.source;
  if (!isObject(source))
    throw invalid(at, "an object (`base64` with `media_type` and `data`, or `url` with `url`)", source);
  if (source.type === "base64") {
    if (typeof source.media_type !== "string" || source.media_type === "")
      throw invalid(`${at}.media_type`, "a string such as `image/png`", source.media_type);
    if (typeof source.data !== "string") throw invalid(`${at}.data`, "a string (base64)", source.data);
    return { type: "image_url", image_url: { url: `data:${source.media_type};base64,${source.data}` } };
  }
  if (source.type === "url") {
    if (typeof source.url !== "string") throw invalid(`${at}.url`, "a string", source.url);
    return { type: "image_url", image_url: { url: source.url } };
  }
  throw unsupported(at, "This image source");
}

/**
 * A text document (`source.type` "text", or "content" with text blocks) as the text a chat model reads: its title
 * and context first. PDFs and files are refused: their text would reach the provider without passing the PII scrub
 * and the content policy, which read only text.
 */
function documentText(block: Block, param: string): string {
  const source = block.source;
  if (!isObject(source)) throw invalid(`${param}.source`, "an object with a `type`", source);
  let body: string;
  if (source.type === "text" && source.data !== undefined) {
    if (typeof source.data !== "string") throw invalid(`${param}.source.data`, "a string", source.data);
    body = source.data;
  } else if (source.type === "content" && source.content !== undefined)
    body = blocksText(source.content, `${param}.source.content`, "unsupported_parameter");
  else
    throw unsupported(
      `${param}.source`,
      "A document other than text (PDF, file or URL: the PII scrub and the content policy cannot read it)",
    );
  const title = optionalString(block.title, `${param}.title`);
  const context = optionalString(block.context, `${param}.context`);
  const lines = [];
  if (title) lines.push(`Document: ${title}`);
  if (context) lines.push(`Context: ${context}`);
  lines.push(body);
  return lines.join("\n");
}

function userTurn(content: Content, param: string): ChatMessage[] {
  if (typeof content === "string") return [{ role: "user", content }];
  const tools: ChatMessage[] = [];
  const parts: ContentPart[] = [];
  content.forEach((raw: unknown, i) => {
    const at = `${param}[${i}]`;
    const b = contentBlock(raw, at);
    if (b.type === "text") parts.push({ type: "text", text: optionalString(b.text, `${at}.text`) });
    else if (b.type === "image") parts.push(imagePart(b, at));
    else if (b.type === "document") parts.push({ type: "text", text: documentText(b, at) });
    else if (b.type === "tool_result") {
      const id = optionalString(b.tool_use_id, `${at}.tool_use_id`);
      checkOptionalBoolean(b.is_error, `${at}.is_error`);
      // A tool message carries text only: images a tool returned follow in the user message after it.
      let text: string;
      if (Array.isArray(b.content)) {
        const texts: string[] = [];
        b.content.forEach((x: unknown, j) => {
          const inner = `${at}.content[${j}]`;
          const block = contentBlock(x, inner);
          if (block.type === "image") parts.push(imagePart(block, inner));
          // Search and retrieval tools return documents: a text document becomes text, as in a user turn.
          else if (block.type === "document") texts.push(documentText(block, inner));
          else texts.push(textOfBlock(block, inner));
        });
        text = texts.join("\n");
      } else text = blocksText(b.content, `${at}.content`);
      tools.push(
        b.is_error === true
          ? { role: "tool", tool_call_id: id, content: `${TOOL_ERROR_PREFIX}${text}`, [TOOL_ERROR]: true }
          : { role: "tool", tool_call_id: id, content: text },
      );
    } else throw unsupported(at, `A \`${b.type}\` block`);
  });
  // Tool results answer the previous assistant turn: in chat completions they must come first.
  if (parts.length === 0) return tools;
  const onlyText = parts.every((p) => p.type === "text");
  return [...tools, { role: "user", content: onlyText ? parts.map((p) => p.text).join("\n") : parts }];
}

function assistantTurn(content: Content, param: string): ChatMessage {
  if (typeof content === "string") return { role: "assistant", content };
  let text = "";
  const calls: ToolCall[] = [];
  content.forEach((raw: unknown, i) => {
    const at = `${param}[${i}]`;
    const b = contentBlock(raw, at);
    if (b.type === "text") text += optionalString(b.text, `${at}.text`);
    else if (b.type === "tool_use")
      calls.push({
        id: optionalString(b.id, `${at}.id`),
        type: "function",
        function: {
          name: optionalString(b.name, `${at}.name`),
          arguments: JSON.stringify(optionalObject(b.input, `${at}.input`) ?? {}),
        },
      });
    else if (b.type !== "thinking" && b.type !== "redacted_thinking")
      throw unsupported(at, `A \`${b.type}\` block`);
  });
  const message: ChatMessage = { role: "assistant", content: text === "" && calls.length ? null : text };
  if (calls.length) message.tool_calls = calls;
  return message;
}

function toolChoice(choice: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (choice === undefined || choice === null) return out;
  if (!isObject(choice))
    throw invalid("tool_choice", "an object with a `type` (auto, any, tool or none)", choice);
  if (typeof choice.type !== "string") throw invalid("tool_choice.type", "a string", choice.type);
  checkOptionalBoolean(choice.disable_parallel_tool_use, "tool_choice.disable_parallel_tool_use");
  if (choice.type === "auto") out.tool_choice = "auto";
  else if (choice.type === "any") out.tool_choice = "required";
  else if (choice.type === "none") out.tool_choice = "none";
  else if (choice.type === "tool") {
    if (typeof choice.name !== "string" || choice.name === "")
      throw invalid("tool_choice.name", "a non-empty string (the tool to use)", choice.name);
    out.tool_choice = { type: "function", function: { name: choice.name } };
  }
  if (choice.disable_parallel_tool_use === true) out.parallel_tool_calls = false;
  return out;
}

/**
 * Whether a JSON schema meets OpenAI's strict structured-output rules: every object lists all its properties as
 * required and sets `additionalProperties: false`. Anthropic accepts schemas that do not (optional properties), and
 * OpenAI refuses those with `strict: true`; without strict it still follows the schema, only not guaranteed.
 */
function meetsStrictRules(schema: unknown, depth = 0): boolean {
  if (depth > 64) return false;
  if (Array.isArray(schema)) return schema.every((s) => meetsStrictRules(s, depth + 1));
  if (typeof schema !== "object" || schema === null) return true;
  const node = schema as Record<string, unknown>;
  const isObject = node.type === "object" || (Array.isArray(node.type) && node.type.includes("object"));
  if (isObject || (typeof node.properties === "object" && node.properties !== null)) {
    if (node.additionalProperties !== false) return false;
    const required = Array.isArray(node.required) ? node.required : [];
    const properties = (node.properties ?? {}) as Record<string, unknown>;
    if (typeof properties !== "object" || !Object.keys(properties).every((k) => required.includes(k)))
      return false;
  }
  return Object.values(node).every((v) => typeof v !== "object" || meetsStrictRules(v, depth + 1));
}

export function messagesToChat(body: MessagesRequest): ChatCompletionRequest {
  const messages: ChatMessage[] = [];
  const system = blocksText(body.system, "system");
  if (system) messages.push({ role: "system", content: system });
  body.messages.forEach((m, i) => {
    const param = `messages[${i}].content`;
    if (m.role === "user") messages.push(...userTurn(m.content, param));
    else if (m.role === "assistant") messages.push(assistantTurn(m.content, param));
    else if (m.role === "system") messages.push({ role: "system", content: blocksText(m.content, param) });
    else
      throw new InvalidRequestError(
        `messages[${i}].role: expected user, assistant or system.`,
        "invalid_value",
        `messages[${i}].role`,
      );
  });
  // `max_completion_tokens`: OpenAI's o-series and gpt-5 refuse `max_tokens` (Claude Code sends it on every request);
  // the Anthropic provider and the limiter read either.
  const chat: ChatCompletionRequest = { model: body.model, messages, max_completion_tokens: body.max_tokens };
  if (typeof body.temperature === "number") chat.temperature = body.temperature;
  if (typeof body.top_p === "number") chat.top_p = body.top_p;
  if (Array.isArray(body.stop_sequences) && body.stop_sequences.length) chat.stop = body.stop_sequences;
  const user = optionalObject(body.metadata, "metadata")?.user_id;
  optionalString(user, "metadata.user_id");
  if (typeof user === "string") chat.user = user;
  if (body.stream === true) chat.stream = true;
  const format = optionalObject(
    optionalObject(body.output_config, "output_config")?.format,
    "output_config.format",
  );
  if (format?.type === "json_schema") {
    const schema = optionalObject(format.schema, "output_config.format.schema");
    chat.response_format = {
      type: "json_schema",
      json_schema: { name: "output", strict: meetsStrictRules(schema), schema },
    };
  }
  if (Array.isArray(body.tools) && body.tools.length) {
    chat.tools = (body.tools as Block[]).map((t, i) => {
      const param = `tools[${i}]`;
      if (t.type !== undefined && t.type !== null && typeof t.type !== "string")
        throw invalid(`${param}.type`, "a string", t.type);
      if (t.type != null && t.type !== "custom") throw unsupported(param, `The server tool \`${t.type}\``);
      optionalString(t.description, `${param}.description`);
      const schema = optionalObject(t.input_schema, `${param}.input_schema`);
      return {
        type: "function",
        function: {
          name: t.name,
          ...(typeof t.description === "string" ? { description: t.description } : {}),
          parameters: schema ?? { type: "object" },
        },
      };
    });
    Object.assign(chat, toolChoice(body.tool_choice));
  }
  return chat;
}

// ---------------------------------------------------------------- responses

const STOP: Record<string, string> = {
  stop: "end_turn",
  length: "max_tokens",
  tool_calls: "tool_use",
  function_call: "tool_use",
  content_filter: "refusal",
};
const stopReason = (finish: string | null | undefined) => STOP[finish ?? "stop"] ?? "end_turn";

/**
 * stop_reason and stop_sequence: "stop_sequence" with the sequence when the provider said which one matched; an
 * Anthropic stop reason a chat finish reason cannot carry (see UNMAPPED_STOP_REASONS) as it was; "refusal" when the
 * answer is a refusal (OpenAI sends one with finish_reason "stop").
 */
function stopOf(
  finish: string | null | undefined,
  sequence: unknown,
  from: { providerStop?: unknown; refused?: boolean } = {},
) {
  if (typeof from.providerStop === "string" && UNMAPPED_STOP_REASONS.has(from.providerStop))
    return { stop_reason: from.providerStop, stop_sequence: null };
  if (typeof sequence === "string" && (finish ?? "stop") === "stop")
    return { stop_reason: "stop_sequence", stop_sequence: sequence };
  if (from.refused && (finish ?? "stop") === "stop") return { stop_reason: "refusal", stop_sequence: null };
  return { stop_reason: stopReason(finish), stop_sequence: null };
}

/**
 * A tool call's arguments as the `input` object: {} for arguments that are not JSON, or that nest deeper than a
 * request body may (the answer is serialized again, and that recursion overflowed the stack: a 500).
 */
function toolInput(args: string | undefined): unknown {
  let input: unknown;
  try {
    input = args ? JSON.parse(args) : {};
  } catch {
    return {};
  }
  return nestsDeeperThan(input, MAX_JSON_DEPTH) ? {} : input;
}

export function chatToMessage(completion: ChatCompletion, model: string): Record<string, unknown> {
  const choice = completion.choices?.[0];
  const message = choice?.message;
  const content: Block[] = [];
  const text =
    (typeof message?.content === "string" ? message.content : "") +
    (typeof message?.refusal === "string" ? message.refusal : "");
  if (text) content.push({ type: "text", text });
  for (const call of message?.tool_calls ?? [])
    content.push({
      type: "tool_use",
      id: call.id,
      name: call.function?.name,
      input: toolInput(call.function?.arguments),
    });
  return {
    id: completion.id,
    type: "message",
    role: "assistant",
    model,
    content,
    ...stopOf(choice?.finish_reason, choice?.stop_sequence, {
      providerStop: choice?.anthropic_stop_reason,
      refused: typeof message?.refusal === "string" && message.refusal !== "",
    }),
    usage: messagesUsage(chatUsage(completion.usage)),
  };
}

/**
 * Anthropic counts prompt-cache reads and writes apart from input_tokens (OpenAI counts them inside prompt_tokens),
 * and clients such as Claude Code price each part on its own.
 */
function messagesUsage(u: {
  input: number;
  output: number;
  cached: number;
  cacheWrite: number;
  cacheWrite1h: number;
}) {
  const { plain, read, write, hour } = promptParts(u.input, u.cached, u.cacheWrite, u.cacheWrite1h);
  return {
    input_tokens: plain,
    output_tokens: u.output,
    cache_read_input_tokens: read,
    cache_creation_input_tokens: write,
    // The writes by lifetime, as Anthropic reports them, when the provider said (1-hour writes cost more).
    ...(hour > 0
      ? { cache_creation: { ephemeral_5m_input_tokens: write - hour, ephemeral_1h_input_tokens: hour } }
      : {}),
  };
}

/** Server-sent event in the Messages framing. */
const event = (type: string, data: Record<string, unknown>) =>
  `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/** Chat completion chunks in, Messages events out (`push` per chunk, `end` once the chunks are done). */
export type MessageStream = ChunkWalker;

export function createMessageStream(model: string, promptTokensEstimate = 0): MessageStream {
  let usage: {
    input_tokens: number;
    output_tokens: number;
    cache_read_input_tokens?: number;
    cache_creation_input_tokens?: number;
    cache_creation?: { ephemeral_5m_input_tokens: number; ephemeral_1h_input_tokens: number };
  } = {
    input_tokens: promptTokensEstimate,
    output_tokens: 0,
  };
  return walkChunks({
    start(out, id) {
      out.push(
        event("message_start", {
          message: {
            id: id ?? `msg_${randomUUID().replace(/-/g, "")}`,
            type: "message",
            role: "assistant",
            model,
            content: [],
            stop_reason: null,
            stop_sequence: null,
            usage: { ...usage, cache_creation_input_tokens: null, cache_read_input_tokens: null },
          },
        }),
      );
    },
    openText: (out, index) =>
      out.push(event("content_block_start", { index, content_block: { type: "text", text: "" } })),
    text: (out, index, text) =>
      out.push(event("content_block_delta", { index, delta: { type: "text_delta", text } })),
    openTool: (out, index, call) =>
      out.push(
        event("content_block_start", {
          index,
          content_block: { type: "tool_use", id: call.id, name: call.name, input: {} },
        }),
      ),
    toolArguments: (out, index, partial_json) =>
      out.push(event("content_block_delta", { index, delta: { type: "input_json_delta", partial_json } })),
    close: (out, index) => out.push(event("content_block_stop", { index })),
    finish(out, reason, reported, stopSequence, seen) {
      if (reported) usage = messagesUsage(reported);
      out.push(
        event("message_delta", { delta: stopOf(reason, stopSequence, seen), usage }),
        event("message_stop", {}),
      );
    },
  });
}

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  402: "billing_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  503: "overloaded_error",
  504: "timeout_error",
  529: "overloaded_error",
};

/** An error in the Messages shape: `{"type": "error", "error": {"type", "message"}}`. */
export function messagesErrorBody(e: ProxyError): Record<string, unknown> {
  const type = ERROR_TYPES[e.status] ?? (e.status >= 500 ? "api_error" : "invalid_request_error");
  return { type: "error", error: { type, message: e.message } };
}

export const messagesErrorEvent = (e: ProxyError) =>
  `event: error\ndata: ${JSON.stringify(messagesErrorBody(e))}\n\n`;
