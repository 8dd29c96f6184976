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
import { walkChunks, type ChunkWalker } from "./chunk-blocks";
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

function parts(content: unknown, param: string): string | ContentPart[] {
  if (typeof content === "string") return content;
  if (!Array.isArray(content))
    throw new InvalidRequestError("content must be a string or a list.", "invalid_value", param);
  const out = (content as Item[]).map((p, i): ContentPart => {
    if (p.type === "input_text" || p.type === "output_text")
      return { type: "text", text: String(p.text ?? "") };
    if (p.type === "refusal") return { type: "text", text: String(p.refusal ?? "") };
    if (p.type === "input_image" && typeof p.image_url === "string")
      return {
        type: "image_url",
        image_url: { url: p.image_url, ...(p.detail ? { detail: p.detail } : {}) },
      };
    throw unsupported(`${param}[${i}]`, `A \`${p.type}\` content part`);
  });
  return out.every((p) => p.type === "text") ? out.map((p) => p.text).join("") : out;
}

function outputText(output: unknown): string {
  if (typeof output === "string") return output;
  if (Array.isArray(output))
    return (output as Item[]).map((p) => (typeof p.text === "string" ? p.text : "")).join("");
  return JSON.stringify(output ?? "");
}

function inputMessages(input: string | Item[]): ChatMessage[] {
  if (typeof input === "string") return [{ role: "user", content: input }];
  const out: ChatMessage[] = [];
  input.forEach((item, i) => {
    const param = `input[${i}]`;
    const type = item.type ?? (item.role ? "message" : undefined);
    if (type === "message") {
      const role = String(item.role);
      if (!["user", "assistant", "system", "developer"].includes(role))
        throw new InvalidRequestError(
          `${param}.role: unknown role \`${role}\`.`,
          "invalid_value",
          `${param}.role`,
        );
      out.push({ role, content: parts(item.content, `${param}.content`) });
    } else if (type === "function_call") {
      const call: ToolCall = {
        id: String(item.call_id ?? ""),
        type: "function",
        function: { name: String(item.name ?? ""), arguments: String(item.arguments ?? "") },
      };
      const last = out.at(-1);
      // Calls of one turn go on one assistant message (after any text it had).
      if (last?.role === "assistant") (last.tool_calls ??= []).push(call);
      else out.push({ role: "assistant", content: null, tool_calls: [call] });
    } else if (type === "function_call_output") {
      out.push({ role: "tool", tool_call_id: String(item.call_id ?? ""), content: outputText(item.output) });
    } else if (type !== "reasoning") {
      throw unsupported(param, `An input item of type \`${type}\``);
    }
  });
  return out;
}

export function responsesToChat(body: ResponsesRequest): ChatCompletionRequest {
  for (const field of ["previous_response_id", "conversation"] as const)
    if (body[field] != null)
      throw unsupported(field, `\`${field}\` (the proxy stores no responses; send the whole input)`);
  if (body.background === true) throw unsupported("background", "`background`");
  const messages: ChatMessage[] = [];
  if (typeof body.instructions === "string" && body.instructions !== "")
    messages.push({ role: "system", content: body.instructions });
  messages.push(...inputMessages(body.input));
  const chat: ChatCompletionRequest = { model: body.model, messages };
  if (typeof body.max_output_tokens === "number") chat.max_completion_tokens = body.max_output_tokens;
  for (const k of ["temperature", "top_p", "parallel_tool_calls"] as const)
    if (body[k] != null) chat[k] = body[k];
  const user = body.safety_identifier ?? body.user;
  if (typeof user === "string") chat.user = user;
  if (body.stream === true) chat.stream = true;
  const effort = (body.reasoning as { effort?: unknown } | undefined)?.effort;
  if (typeof effort === "string") chat.reasoning_effort = effort;
  const format = (body.text as { format?: Item } | undefined)?.format;
  if (format?.type === "json_schema")
    chat.response_format = {
      type: "json_schema",
      json_schema: {
        name: format.name ?? "output",
        schema: format.schema,
        ...(format.strict != null ? { strict: format.strict } : {}),
      },
    };
  else if (format?.type === "json_object") chat.response_format = { type: "json_object" };
  if (Array.isArray(body.tools) && body.tools.length) {
    chat.tools = (body.tools as Item[]).map((t, i) => {
      if (t.type !== "function") throw unsupported(`tools[${i}]`, `The hosted tool \`${t.type}\``);
      return {
        type: "function",
        function: {
          name: t.name,
          ...(typeof t.description === "string" ? { description: t.description } : {}),
          parameters: t.parameters ?? { type: "object", properties: {} },
          ...(t.strict != null ? { strict: t.strict } : {}),
        },
      };
    });
  }
  const choice = body.tool_choice as string | Item | undefined;
  if (typeof choice === "string") chat.tool_choice = choice;
  else if (choice?.type === "function")
    chat.tool_choice = { type: "function", function: { name: choice.name } };
  return chat;
}

// ---------------------------------------------------------------- responses

interface OutputItem {
  type: "message" | "function_call";
  id: string;
  status: string;
  [k: string]: unknown;
}

function responseObject(
  id: string,
  model: string,
  created: number,
  output: OutputItem[],
  finish: string | null,
  usage: { input_tokens: number; output_tokens: number } | null,
  status: "in_progress" | "completed" | "incomplete",
): Record<string, unknown> {
  return {
    id,
    object: "response",
    created_at: created,
    status,
    error: null,
    incomplete_details:
      status === "incomplete"
        ? { reason: finish === "content_filter" ? "content_filter" : "max_output_tokens" }
        : null,
    model,
    output,
    parallel_tool_calls: true,
    tool_choice: "auto",
    tools: [],
    usage: usage && {
      input_tokens: usage.input_tokens,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: usage.output_tokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: usage.input_tokens + usage.output_tokens,
    },
  };
}

const finalStatus = (finish: string | null) =>
  finish === "length" || finish === "content_filter" ? "incomplete" : "completed";

const messageItem = (text: string, status: string): OutputItem => ({
  type: "message",
  id: newId("msg"),
  status,
  role: "assistant",
  content: status === "in_progress" ? [] : [{ type: "output_text", text, annotations: [] }],
});

export function chatToResponse(completion: ChatCompletion, model: string): Record<string, unknown> {
  const choice = completion.choices?.[0];
  const message = choice?.message;
  const output: OutputItem[] = [];
  if (typeof message?.content === "string" && message.content !== "")
    output.push(messageItem(message.content, "completed"));
  for (const call of message?.tool_calls ?? [])
    output.push({
      type: "function_call",
      id: newId("fc"),
      status: "completed",
      call_id: call.id ?? "",
      name: call.function?.name ?? "",
      arguments: call.function?.arguments ?? "",
    });
  const finish = choice?.finish_reason ?? "stop";
  return responseObject(
    newId("resp"),
    model,
    completion.created ?? Math.floor(Date.now() / 1000),
    output,
    finish,
    {
      input_tokens: completion.usage?.prompt_tokens ?? 0,
      output_tokens: completion.usage?.completion_tokens ?? 0,
    },
    finalStatus(finish),
  );
}

/** Chat completion chunks in, Responses events out (`push` per chunk, `end` once the chunks are done). */
export type ResponseEventStream = ChunkWalker;

export function createResponseEventStream(model: string): ResponseEventStream {
  const id = newId("resp");
  const created = Math.floor(Date.now() / 1000);
  let sequence = 0;
  const output: OutputItem[] = [];
  const emit = (out: string[], type: string, data: Record<string, unknown>) =>
    out.push(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`);
  const added = (out: string[], index: number, item: OutputItem) => {
    output[index] = item;
    emit(out, "response.output_item.added", { output_index: index, item: structuredClone(item) });
  };
  const textPart = (index: number) => (output[index].content as Array<{ type: string; text: string }>)[0];

  return walkChunks({
    start(out) {
      const snapshot = responseObject(id, model, created, [], null, null, "in_progress");
      emit(out, "response.created", { response: snapshot });
      emit(out, "response.in_progress", { response: snapshot });
    },
    openText(out, index) {
      added(out, index, messageItem("", "in_progress"));
      const part = { type: "output_text", text: "", annotations: [] };
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
      });
    },
    openTool(out, index, call) {
      added(out, index, {
        type: "function_call",
        id: newId("fc"),
        status: "in_progress",
        call_id: call.id,
        name: call.name,
        arguments: "",
      });
    },
    toolArguments(out, index, delta) {
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
        });
        emit(out, "response.content_part.done", {
          item_id: item.id,
          output_index: index,
          content_index: 0,
          part,
        });
      } else {
        emit(out, "response.function_call_arguments.done", {
          item_id: item.id,
          output_index: index,
          arguments: item.arguments,
        });
      }
      emit(out, "response.output_item.done", { output_index: index, item });
    },
    finish(out, reason, usage) {
      const status = finalStatus(reason);
      const counts = { input_tokens: usage?.input ?? 0, output_tokens: usage?.output ?? 0 };
      emit(out, status === "completed" ? "response.completed" : "response.incomplete", {
        response: responseObject(id, model, created, output, reason, counts, status),
      });
    },
  });
}

/** A failure after the stream started: the Responses `error` event. */
export function responsesErrorEvent(e: ProxyError): string {
  const data = { type: "error", code: e.code, message: e.message, param: e.param, sequence_number: 0 };
  return `event: error\ndata: ${JSON.stringify(data)}\n\n`;
}
