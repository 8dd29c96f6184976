/**
 * The OpenAI Responses API as an inbound wire format (`POST /v1/responses`, for the Agents SDK, Codex and other
 * Responses clients), stateless: a Responses request becomes the chat-completions request every stage works on, and
 * the chat result goes back as a Response object or the Responses event stream. Routing to any provider (Anthropic
 * included), PII, policy, limits, cache and usage are the chat pipeline's, unchanged.
 *
 * Request: `instructions` → a system message; `input` (a string, or items: messages with input_text / input_image /
 * output_text parts, `function_call`, `function_call_output`) → chat messages, function calls attached to the
 * assistant turn before their outputs; `reasoning` items are dropped (they only make sense to the model that made
 * them). Function `tools`, `tool_choice`, `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`,
 * `text.format` (→ `response_format`), `reasoning.effort` (→ `reasoning_effort`), `user` / `safety_identifier` and
 * `stream` are translated. The proxy keeps no responses: `previous_response_id`, `conversation` and `background` are
 * a 400, as are hosted tools (web search, file search, …) and input kinds it cannot express; `store` is ignored.
 */
import { randomUUID } from "node:crypto";
import { InvalidRequestError, type ProxyError } from "../errors";
import {
  checkOptionalBoolean,
  invalid,
  isObject,
  optionalObject,
  optionalString,
  type Json,
} from "./input-check";
import { chatUsage, walkChunks, type ChunkUsage, type ChunkWalker } from "./chunk-blocks";
import type { ChatCompletion, ChatCompletionRequest, ChatMessage, ContentPart, ToolCall } from "../types";

type Item = { type?: string; [k: string]: unknown };

export interface ResponsesRequest {
  model: string;
  input: string | Item[];
  [extra: string]: unknown;
}

const unsupported = (param: string, what: string) =>
  new InvalidRequestError(`${what} is not supported by this proxy.`, "unsupported_parameter", param);

const newId = (prefix: string) => `${prefix}_${randomUUID().replace(/-/g, "")}`;

// ---------------------------------------------------------------- shape checks
// Every field the translation reads is checked for its type first: a wrong-typed value from the client is a 400
// naming the field, never a TypeError (a 500) or "[object Object]" sent on as text.

/** An object with a string `type` (a content part, an input item, a tool choice). */
function typed(v: unknown, param: string): Json & { type: string } {
  if (!isObject(v)) throw invalid(param, "an object with a `type`", v);
  if (typeof v.type !== "string") throw invalid(`${param}.type`, "a string", v.type);
  return v as Json & { type: string };
}

function parts(content: unknown, param: string): string | ContentPart[] {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw invalid(param, "a string or a list of content parts", content);
  const out = content.map((raw: unknown, i) => contentPart(raw, `${param}[${i}]`));
  // Parts joined by a line break, as /v1/messages joins text blocks: clients put context and the request in separate
  // parts, which must not run together ("</env>Fix the bug").
  return out.every((p) => p.type === "text") ? out.map((p) => p.text).join("\n") : out;
}

function contentPart(raw: unknown, at: string): ContentPart {
  const p = typed(raw, at);
  if (p.type === "input_text" || p.type === "output_text")
    return { type: "text", text: optionalString(p.text, `${at}.text`) };
  if (p.type === "refusal") return { type: "text", text: optionalString(p.refusal, `${at}.refusal`) };
  if (p.type === "input_image" && p.image_url !== undefined && p.image_url !== null) {
    if (typeof p.image_url !== "string")
      throw invalid(`${at}.image_url`, "a string (a URL or a data URL)", p.image_url);
    const detail = optionalString(p.detail, `${at}.detail`);
    return { type: "image_url", image_url: { url: p.image_url, ...(detail ? { detail } : {}) } };
  }
  if (p.type === "input_image")
    throw unsupported(
      at,
      "An `input_image` by `file_id` (the proxy cannot read OpenAI's file store; send `image_url`, a URL or a data URL)",
    );
  throw unsupported(at, `A \`${p.type}\` content part`);
}

/**
 * A tool's output as a chat tool message's text, and the images it returned: a tool message holds only text, so
 * they follow it in a user message (as /v1/messages does with a tool_result's images).
 */
function toolOutput(output: unknown, param: string): { text: string; images: ContentPart[] } {
  if (typeof output === "string") return { text: output, images: [] };
  if (!Array.isArray(output)) return { text: JSON.stringify(output ?? ""), images: [] };
  const texts: string[] = [];
  const images: ContentPart[] = [];
  output.forEach((p: unknown, i) => {
    const at = `${param}[${i}]`;
    if (!isObject(p)) throw invalid(at, "an object (a content part)", p);
    if (p.type === "input_image") images.push(contentPart(p, at));
    else if (p.type === "input_file") throw unsupported(at, "An `input_file` tool output");
    else texts.push(optionalString(p.text, `${at}.text`) ?? "");
  });
  return { text: texts.join(""), images };
}

const ROLES = ["user", "assistant", "system", "developer"];

function inputMessages(input: string | Item[]): ChatMessage[] {
  if (typeof input === "string") return [{ role: "user", content: input }];
  const out: ChatMessage[] = [];
  input.forEach((item: unknown, i) => {
    const param = `input[${i}]`;
    if (!isObject(item)) throw invalid(param, "an object (an input item)", item);
    if (item.type !== undefined && item.type !== null && typeof item.type !== "string")
      throw invalid(`${param}.type`, "a string", item.type);
    const type = item.type ?? (item.role !== undefined && item.role !== null ? "message" : undefined);
    if (type === undefined)
      throw new InvalidRequestError(
        `${param}.type is missing: an input item needs a \`type\` (or a \`role\`, for a message).`,
        "invalid_value",
        `${param}.type`,
      );
    if (type === "message") {
      const role = item.role;
      if (typeof role !== "string") throw invalid(`${param}.role`, `one of ${ROLES.join(", ")}`, role);
      if (!ROLES.includes(role))
        throw new InvalidRequestError(
          `${param}.role: unknown role \`${role}\`.`,
          "invalid_value",
          `${param}.role`,
        );
      const content = parts(item.content, `${param}.content`);
      const last = out.at(-1);
      // Assistant text after the turn's calls (our own streams produce that order) belongs to that turn: chat
      // completions wants a call's tool message right after the message that made the call.
      if (
        role === "assistant" &&
        last?.role === "assistant" &&
        last.tool_calls?.length &&
        typeof content === "string"
      )
        // A line break between the turn's texts, as between text parts: "A" and "B" must not become "AB".
        last.content =
          typeof last.content === "string" && last.content !== "" ? `${last.content}\n${content}` : content;
      else out.push({ role, content });
    } else if (type === "function_call" || type === "custom_tool_call") {
      // A custom (freeform) tool travels as a function taking {"input": <text>} (see responsesToChat).
      const args =
        type === "custom_tool_call"
          ? JSON.stringify({ input: optionalString(item.input, `${param}.input`) })
          : item.arguments;
      if (args !== undefined && args !== null && typeof args !== "string")
        throw invalid(`${param}.arguments`, "a string (the call's arguments as JSON text)", args);
      const call: ToolCall = {
        id: optionalString(item.call_id, `${param}.call_id`),
        type: "function",
        function: { name: optionalString(item.name, `${param}.name`), arguments: args ?? "" },
      };
      const last = out.at(-1);
      // Calls of one turn go on one assistant message (after any text it had).
      if (last?.role === "assistant") (last.tool_calls ??= []).push(call);
      else out.push({ role: "assistant", content: null, tool_calls: [call] });
    } else if (type === "function_call_output" || type === "custom_tool_call_output") {
      const { text, images } = toolOutput(item.output, `${param}.output`);
      out.push({
        role: "tool",
        tool_call_id: optionalString(item.call_id, `${param}.call_id`),
        content: text,
      });
      if (images.length > 0) out.push({ role: "user", content: images });
    } else if (type !== "reasoning") {
      throw unsupported(param, `An input item of type \`${type}\``);
    }
  });
  return out;
}

/** A function tool as chat completions has it. */
function functionTool(t: Json, param: string): Record<string, unknown> {
  optionalString(t.description, `${param}.description`);
  const parameters = optionalObject(t.parameters, `${param}.parameters`);
  checkOptionalBoolean(t.strict, `${param}.strict`);
  return {
    type: "function",
    function: {
      name: t.name,
      ...(typeof t.description === "string" ? { description: t.description } : {}),
      parameters: parameters ?? { type: "object", properties: {} },
      ...(t.strict != null ? { strict: t.strict } : {}),
    },
  };
}

function toolName(t: Json, param: string): string {
  if (typeof t.name !== "string" || t.name === "")
    throw invalid(`${param}.name`, "a non-empty string", t.name);
  return t.name;
}

/** The chat `tool_choice` for a Responses one (the request has tools). */
function chatToolChoice(choice: unknown): unknown {
  if (choice === undefined || choice === null) return undefined;
  if (typeof choice === "string") return choice;
  const c = typed(choice, "tool_choice");
  if (c.type === "function" || c.type === "custom")
    return { type: "function", function: { name: toolName(c, "tool_choice") } };
  if (c.type === "allowed_tools") {
    if (c.mode !== undefined && c.mode !== null && typeof c.mode !== "string")
      throw invalid("tool_choice.mode", "a string (`auto` or `required`)", c.mode);
    const tools = c.tools ?? [];
    if (!Array.isArray(tools)) throw invalid("tool_choice.tools", "a list of tools", tools);
    return {
      type: "allowed_tools",
      allowed_tools: {
        mode: c.mode,
        tools: tools.map((t: unknown, i) => {
          const at = `tool_choice.tools[${i}]`;
          if (!isObject(t)) throw invalid(at, "an object (a tool, with its `name`)", t);
          return { type: "function", function: { name: toolName(t, at) } };
        }),
      },
    };
  }
  return undefined;
}

export function responsesToChat(body: ResponsesRequest): ChatCompletionRequest {
  for (const field of ["previous_response_id", "conversation"] as const)
    if (body[field] != null)
      throw unsupported(field, `\`${field}\` (the proxy stores no responses; send the whole input)`);
  if (body.prompt != null)
    throw unsupported(
      "prompt",
      "`prompt` (a prompt template stored with OpenAI: the proxy cannot read it; send `instructions` and `input`)",
    );
  if (body.background === true) throw unsupported("background", "`background`");
  if (body.max_tool_calls != null)
    throw unsupported("max_tool_calls", "`max_tool_calls` (chat completions has no such limit)");
  if (body.input === undefined || body.input === null)
    throw new InvalidRequestError(
      "Invalid request: `input`: required (a string, or a list of input items).",
      "missing_required_parameter",
      "input",
    );
  const messages: ChatMessage[] = [];
  if (typeof body.instructions === "string" && body.instructions !== "")
    messages.push({ role: "system", content: body.instructions });
  messages.push(...inputMessages(body.input));
  const chat: ChatCompletionRequest = { model: body.model, messages };
  if (typeof body.max_output_tokens === "number") chat.max_completion_tokens = body.max_output_tokens;
  for (const k of ["temperature", "top_p"] as const) if (body[k] != null) chat[k] = body[k];
  for (const k of ["prompt_cache_key", "service_tier"] as const)
    if (body[k] != null) chat[k] = optionalString(body[k], k);
  const text = optionalObject(body.text, "text");
  optionalString(text?.verbosity, "text.verbosity");
  if (typeof text?.verbosity === "string") chat.verbosity = text.verbosity;
  for (const k of ["safety_identifier", "user"] as const) optionalString(body[k], k);
  const user = body.safety_identifier ?? body.user;
  if (typeof user === "string") chat.user = user;
  if (body.stream === true) chat.stream = true;
  // Log probabilities: asked for with `include` (and `top_logprobs` alternatives), as chat's logprobs.
  if (body.include != null && !Array.isArray(body.include))
    throw invalid("include", "a list of strings", body.include);
  if (Array.isArray(body.include) && body.include.includes("message.output_text.logprobs"))
    chat.logprobs = true;
  if (body.top_logprobs != null) {
    if (typeof body.top_logprobs !== "number" || !Number.isInteger(body.top_logprobs))
      throw invalid("top_logprobs", "an integer", body.top_logprobs);
    chat.logprobs = true;
    chat.top_logprobs = body.top_logprobs;
  }
  const effort = optionalObject(body.reasoning, "reasoning")?.effort;
  optionalString(effort, "reasoning.effort");
  if (typeof effort === "string") chat.reasoning_effort = effort;
  const format = optionalObject(text?.format, "text.format");
  if (format?.type === "json_schema") {
    optionalString(format.name, "text.format.name");
    optionalObject(format.schema, "text.format.schema");
    checkOptionalBoolean(format.strict, "text.format.strict");
    optionalString(format.description, "text.format.description");
    chat.response_format = {
      type: "json_schema",
      json_schema: {
        name: format.name ?? "output",
        ...(typeof format.description === "string" ? { description: format.description } : {}),
        schema: format.schema,
        ...(format.strict != null ? { strict: format.strict } : {}),
      },
    };
  } else if (format?.type === "json_object") chat.response_format = { type: "json_object" };
  if (Array.isArray(body.tools) && body.tools.length) {
    chat.tools = (body.tools as Item[]).map((t, i) => {
      const param = `tools[${i}]`;
      if (t.type !== "function" && t.type !== "custom")
        throw unsupported(param, `The hosted tool \`${t.type}\``);
      toolName(t, param);
      return t.type === "custom" ? customAsFunction(t, param) : functionTool(t, param);
    });
    // Without tools, chat completions refuses both.
    checkOptionalBoolean(body.parallel_tool_calls, "parallel_tool_calls");
    if (body.parallel_tool_calls != null) chat.parallel_tool_calls = body.parallel_tool_calls;
    const choice = chatToolChoice(body.tool_choice);
    if (choice !== undefined) chat.tool_choice = choice;
  }
  return chat;
}

/**
 * The request fields a Response repeats (clients and typed decoders read them from the Response): what was asked,
 * with the API's defaults.
 */
export function responseEcho(body: Record<string, unknown>): Record<string, unknown> {
  return {
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    metadata: body.metadata ?? {},
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    reasoning: body.reasoning ?? null,
    store: false,
    temperature: body.temperature ?? null,
    text: body.text ?? { format: { type: "text" } },
    tool_choice: body.tool_choice ?? "auto",
    tools: body.tools ?? [],
    top_p: body.top_p ?? null,
    truncation: body.truncation ?? "disabled",
    user: body.user ?? null,
  };
}

/** Names of the custom (freeform) tools of a request: their calls go back as custom_tool_call items. */
export function customToolNames(body: Record<string, unknown>): Set<string> {
  const tools = Array.isArray(body.tools) ? (body.tools as Item[]) : [];
  return new Set(tools.filter((t) => t.type === "custom").map((t) => String(t.name)));
}

/**
 * A custom tool takes free text (a patch, a shell line) instead of JSON arguments. Chat providers in general only
 * know function tools, so it goes upstream as a function with one string parameter, `input`, and its calls come back
 * as custom_tool_call items with that text.
 */
function customAsFunction(t: Json, param: string): Record<string, unknown> {
  const description = optionalString(t.description, `${param}.description`);
  const format = optionalObject(t.format, `${param}.format`);
  let grammar = "";
  if (format?.type === "grammar") {
    const syntax = optionalString(format.syntax, `${param}.format.syntax`);
    const definition = optionalString(format.definition, `${param}.format.definition`);
    if (typeof format.definition === "string")
      grammar = `\n\nThe input must follow this ${syntax} grammar:\n${definition}`;
  }
  return {
    type: "function",
    function: {
      name: t.name,
      description: `${description}${grammar}`.trim(),
      parameters: {
        type: "object",
        properties: { input: { type: "string", description: "The tool's raw input text." } },
        required: ["input"],
        additionalProperties: false,
      },
    },
  };
}

/** The `input` text a custom tool call carried (its arguments are `{"input": …}`), or the raw arguments. */
function customInput(args: string): string {
  try {
    const parsed = JSON.parse(args) as { input?: unknown };
    if (typeof parsed.input === "string") return parsed.input;
  } catch {
    // not JSON: the model answered with the text itself
  }
  return args;
}

// ---------------------------------------------------------------- responses

interface OutputItem {
  type: "message" | "function_call" | "custom_tool_call";
  id: string;
  status: string;
  [k: string]: unknown;
}

type ResponseStatus = "in_progress" | "completed" | "incomplete" | "failed";

/**
 * A failed Response's `error.code` is one of a closed list in OpenAI's API (typed decoders reject others); the
 * proxy's own code goes in the `error` event before it.
 */
function responseErrorCode(error: ProxyError): string {
  if (error.status === 429 || error.status === 529) return "rate_limit_exceeded";
  if (error.status === 400) return "invalid_prompt";
  return "server_error";
}

function responseObject(
  id: string,
  model: string,
  created: number,
  output: OutputItem[],
  finish: string | null,
  usage: ChunkUsage | null,
  status: ResponseStatus,
  echo: Record<string, unknown>,
  error: ProxyError | null = null,
): Record<string, unknown> {
  return {
    ...echo,
    id,
    object: "response",
    created_at: created,
    status,
    error: error && { code: responseErrorCode(error), message: error.message },
    incomplete_details:
      status === "incomplete"
        ? { reason: finish === "content_filter" ? "content_filter" : "max_output_tokens" }
        : null,
    model,
    output,
    usage: usage && {
      input_tokens: usage.input,
      input_tokens_details: { cached_tokens: usage.cached },
      output_tokens: usage.output,
      output_tokens_details: { reasoning_tokens: usage.reasoning },
      total_tokens: usage.input + usage.output,
    },
  };
}

const finalStatus = (finish: string | null): ResponseStatus =>
  finish === "length" || finish === "content_filter" ? "incomplete" : "completed";

const outputTextPart = (text: string) => ({ type: "output_text", text, annotations: [], logprobs: [] });

const messageItem = (text: string, status: string): OutputItem => ({
  type: "message",
  id: newId("msg"),
  status,
  role: "assistant",
  content: status === "in_progress" ? [] : [outputTextPart(text)],
});

/** A tool call as its output item: function_call, or custom_tool_call for a custom tool (its `input` text). */
function callItem(
  call: { id: string; name: string; arguments: string },
  custom: ReadonlySet<string>,
  status: string,
): OutputItem {
  if (custom.has(call.name))
    return {
      type: "custom_tool_call",
      id: newId("ctc"),
      status,
      call_id: call.id,
      name: call.name,
      input: customInput(call.arguments),
    };
  return {
    type: "function_call",
    id: newId("fc"),
    status,
    call_id: call.id,
    name: call.name,
    arguments: call.arguments,
  };
}

export function chatToResponse(
  completion: ChatCompletion,
  model: string,
  custom: ReadonlySet<string> = new Set(),
  echo: Record<string, unknown> = {},
): Record<string, unknown> {
  const choice = completion.choices?.[0];
  const message = choice?.message;
  const output: OutputItem[] = [];
  const text =
    (typeof message?.content === "string" ? message.content : "") +
    (typeof message?.refusal === "string" ? message.refusal : "");
  const finish = choice?.finish_reason ?? "stop";
  if (text !== "") output.push(messageItem(text, "completed"));
  for (const call of message?.tool_calls ?? [])
    output.push(
      callItem(
        { id: call.id ?? "", name: call.function?.name ?? "", arguments: call.function?.arguments ?? "" },
        custom,
        "completed",
      ),
    );
  // A cut answer (max_output_tokens, a content filter): the item it was cut in is incomplete, like the response.
  if (finalStatus(finish) === "incomplete" && output.length > 0)
    output[output.length - 1].status = "incomplete";
  return responseObject(
    newId("resp"),
    model,
    completion.created ?? Math.floor(Date.now() / 1000),
    output,
    finish,
    chatUsage(completion.usage),
    finalStatus(finish),
    echo,
  );
}

/** Chat completion chunks in, Responses events out; `error` ends a stream that failed after it started. */
export interface ResponseEventStream extends ChunkWalker {
  error(e: ProxyError): string;
}

export function createResponseEventStream(
  model: string,
  custom: ReadonlySet<string> = new Set(),
  echo: Record<string, unknown> = {},
): ResponseEventStream {
  const id = newId("resp");
  const created = Math.floor(Date.now() / 1000);
  let sequence = 0;
  const output: OutputItem[] = [];
  /** Argument text of custom tool calls: their input is known only once the JSON is complete. */
  const customArgs = new Map<number, string>();
  const frame = (type: string, data: Record<string, unknown>) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`;
  const emit = (out: string[], type: string, data: Record<string, unknown>) => out.push(frame(type, data));
  const added = (out: string[], index: number, item: OutputItem) => {
    output[index] = item;
    emit(out, "response.output_item.added", { output_index: index, item: structuredClone(item) });
  };
  const textPart = (index: number) => (output[index].content as Array<{ type: string; text: string }>)[0];

  const walker = walkChunks({
    start(out) {
      const snapshot = responseObject(id, model, created, [], null, null, "in_progress", echo);
      emit(out, "response.created", { response: snapshot });
      emit(out, "response.in_progress", { response: snapshot });
    },
    openText(out, index) {
      added(out, index, messageItem("", "in_progress"));
      const part = outputTextPart("");
      (output[index].content as unknown[]).push(part);
      emit(out, "response.content_part.added", {
        item_id: output[index].id,
        output_index: index,
        content_index: 0,
        part,
      });
    },
    text(out, index, delta) {
      textPart(index).text += delta;
      emit(out, "response.output_text.delta", {
        item_id: output[index].id,
        output_index: index,
        content_index: 0,
        delta,
        logprobs: [],
      });
    },
    openTool(out, index, call) {
      const item = callItem({ ...call, arguments: "" }, custom, "in_progress");
      if (item.type === "custom_tool_call") customArgs.set(index, "");
      added(out, index, item);
    },
    toolArguments(out, index, delta) {
      const pending = customArgs.get(index);
      if (pending !== undefined) {
        customArgs.set(index, pending + delta);
        return;
      }
      output[index].arguments = String(output[index].arguments) + delta;
      emit(out, "response.function_call_arguments.delta", {
        item_id: output[index].id,
        output_index: index,
        delta,
      });
    },
    close(out, index) {
      const item = output[index];
      item.status = "completed";
      if (item.type === "message") {
        const part = textPart(index);
        emit(out, "response.output_text.done", {
          item_id: item.id,
          output_index: index,
          content_index: 0,
          text: part.text,
          logprobs: [],
        });
        emit(out, "response.content_part.done", {
          item_id: item.id,
          output_index: index,
          content_index: 0,
          part,
        });
      } else if (item.type === "custom_tool_call") {
        item.input = customInput(customArgs.get(index) ?? "");
        emit(out, "response.custom_tool_call_input.delta", {
          item_id: item.id,
          output_index: index,
          delta: item.input,
        });
        emit(out, "response.custom_tool_call_input.done", {
          item_id: item.id,
          output_index: index,
          input: item.input,
        });
      } else {
        emit(out, "response.function_call_arguments.done", {
          item_id: item.id,
          output_index: index,
          name: item.name,
          arguments: item.arguments,
        });
      }
      emit(out, "response.output_item.done", { output_index: index, item });
    },
    finish(out, reason, usage) {
      const status = finalStatus(reason);
      // The last item was cut with the response (its output_item.done went out before the reason was known).
      if (status === "incomplete" && output.length > 0) output[output.length - 1].status = "incomplete";
      emit(out, status === "completed" ? "response.completed" : "response.incomplete", {
        response: responseObject(id, model, created, output, reason, usage, status, echo),
      });
    },
  });
  return {
    ...walker,
    // Clients read the failure from response.failed (Codex does; the SDK also surfaces the error event).
    error: (e) =>
      frame("error", { code: e.code, message: e.message, param: e.param }) +
      frame("response.failed", {
        response: responseObject(id, model, created, output, null, null, "failed", echo, e),
      }),
  };
}
