/**
 * OpenAI chat completions ⇄ Anthropic Messages API, both directions, JSON and streams.
 *
 * Request: system and developer messages become `system`; user, assistant and tool messages become Anthropic
 * turns (text, images as base64 or URL, assistant `tool_calls` as `tool_use` blocks, `tool` messages as `tool_result`
 * blocks; consecutive turns of one role are merged). `max_completion_tokens` / `max_tokens` (or the provider's
 * default, Anthropic requires one), `stop`, `tools`, `tool_choice`, `parallel_tool_calls`, `user` and `stream` are
 * translated; `response_format` json_schema / json_object becomes `output_config.format` (structured outputs) and
 * `reasoning_effort` becomes `output_config.effort`. What Anthropic cannot do (`n` > 1, `logprobs`, audio and file
 * parts, non-function tools) is a 400 naming the field; sampling and OpenAI-only fields (`temperature`, `top_p` —
 * no longer part of the Messages API —, seed, penalties, logit_bias, service_tier …) are dropped.
 *
 * Response: text blocks → `content`, tool_use blocks → `tool_calls`, stop_reason → finish_reason, usage →
 * prompt_tokens (input + cache reads and writes) / completion_tokens. Streams are re-framed event by event as
 * `chat.completion.chunk`s, ending with a usage chunk (passed on only if the client asked for it).
 */
import { InvalidRequestError } from "../errors";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "../lib/body";
import {
  TOOL_ERROR,
  TOOL_ERROR_PREFIX,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatMessage,
  type ContentPart,
  type ToolCall,
  type Usage,
} from "../types";

type Block = Record<string, unknown> & { type: string };
interface Turn {
  role: "user" | "assistant";
  content: Block[];
}

const unsupported = (field: string, what: string) =>
  new InvalidRequestError(`${what} is not supported by Anthropic models.`, "unsupported_by_provider", field);

function textOf(content: ChatMessage["content"], field: string): string {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  return content
    .map((p, i) => {
      if (typeof p.text === "string") return p.text;
      throw unsupported(`${field}[${i}]`, `A \`${p.type}\` part here`);
    })
    .join("\n");
}

function imageBlock(part: ContentPart, field: string): Block {
  const url = (part.image_url as { url?: unknown } | undefined)?.url;
  if (typeof url !== "string")
    throw new InvalidRequestError("image_url.url is required.", "invalid_request", field);
  const data = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  if (data) return { type: "image", source: { type: "base64", media_type: data[1], data: data[2] } };
  return { type: "image", source: { type: "url", url } };
}

function contentBlocks(content: ChatMessage["content"], field: string): Block[] {
  if (content === undefined || content === null) return [];
  if (typeof content === "string") return content === "" ? [] : [{ type: "text", text: content }];
  const blocks = content.map((p, i): Block => {
    if (typeof p.text === "string") return { type: "text", text: p.text };
    if (p.type === "refusal" && typeof p.refusal === "string") return { type: "text", text: p.refusal };
    if (p.type === "image_url") return imageBlock(p, `${field}[${i}]`);
    throw unsupported(`${field}[${i}]`, `A \`${p.type}\` content part`);
  });
  // Anthropic refuses empty text blocks.
  return blocks.filter((b) => b.type !== "text" || b.text !== "");
}

function toolUse(call: ToolCall, field: string): Block {
  const args = call.function?.arguments ?? "{}";
  let input: unknown;
  try {
    input = args === "" ? {} : JSON.parse(args);
  } catch {
    throw new InvalidRequestError("Tool-call arguments must be valid JSON.", "invalid_request", field);
  }
  // The arguments are a string, so the body's depth check never saw them; parsed they join the body, whose
  // serialization recurses (100k levels overflowed the stack). The same bound as a body's.
  if (nestsDeeperThan(input, MAX_JSON_DEPTH)) {
    throw new InvalidRequestError(
      `Tool-call arguments nest arrays and objects more than ${MAX_JSON_DEPTH} levels deep; flatten them.`,
      "invalid_value",
      `${field}.function.arguments`,
    );
  }
  return { type: "tool_use", id: call.id ?? "", name: call.function?.name ?? "", input };
}

function turns(messages: ChatMessage[]): { system: string; turns: Turn[] } {
  const system: string[] = [];
  const out: Turn[] = [];
  const push = (role: Turn["role"], blocks: Block[]) => {
    // A turn without content (an empty assistant message in the history) is refused: leave it out.
    if (blocks.length === 0) return;
    const last = out.at(-1);
    if (last && last.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  messages.forEach((m, i) => {
    const field = `messages[${i}]`;
    switch (m.role) {
      case "system":
      case "developer":
        system.push(textOf(m.content, `${field}.content`));
        return;
      case "user":
        push("user", contentBlocks(m.content, `${field}.content`));
        return;
      case "assistant": {
        const blocks = contentBlocks(m.content, `${field}.content`);
        (m.tool_calls ?? []).forEach((c, j) => blocks.push(toolUse(c, `${field}.tool_calls[${j}]`)));
        push("assistant", blocks);
        return;
      }
      case "tool": {
        let content = textOf(m.content, `${field}.content`);
        const failed = m[TOOL_ERROR] === true;
        // The prefix stood in for the flag a chat message cannot carry; Anthropic gets the flag back instead.
        if (failed && content.startsWith(TOOL_ERROR_PREFIX))
          content = content.slice(TOOL_ERROR_PREFIX.length);
        push("user", [
          {
            type: "tool_result",
            tool_use_id: m.tool_call_id ?? "",
            content,
            ...(failed ? { is_error: true } : {}),
          },
        ]);
        return;
      }
      default:
        throw unsupported(`${field}.role`, `The \`${m.role}\` role`);
    }
  });
  return { system: system.filter((s) => s !== "").join("\n\n"), turns: out };
}

function tools(list: unknown): Array<Record<string, unknown>> {
  if (!Array.isArray(list)) return [];
  return list.map((t: { type?: string; function?: Record<string, unknown> }, i) => {
    if (t.type !== "function" || !t.function) throw unsupported(`tools[${i}]`, `A \`${t.type}\` tool`);
    const f = t.function;
    return {
      name: f.name,
      ...(typeof f.description === "string" ? { description: f.description } : {}),
      input_schema: f.parameters ?? { type: "object", properties: {} },
    };
  });
}

interface AllowedTools {
  mode?: unknown;
  tools?: Array<{ type?: unknown; function?: { name?: unknown }; name?: unknown }>;
}

/** The tool names an `allowed_tools` choice permits (function tools, either spelling), or null if none are named. */
function allowedToolNames(allowed: AllowedTools | undefined): Set<string> | null {
  if (!allowed || !Array.isArray(allowed.tools)) return null;
  const names = new Set<string>();
  for (const t of allowed.tools) {
    const name = t?.function?.name ?? t?.name;
    if (typeof name === "string") names.add(name);
  }
  return names;
}

function toolChoice(
  choice: unknown,
  parallel: unknown,
  toolNames: readonly string[],
): Record<string, unknown> | undefined {
  let out: Record<string, unknown> | undefined;
  if (choice === "auto") out = { type: "auto" };
  else if (choice === "required") out = { type: "any" };
  else if (choice === "none") out = { type: "none" };
  else if (choice && typeof choice === "object" && (choice as { type?: unknown }).type === "allowed_tools") {
    // Anthropic has no allowed-tools list: the request's tools are cut down to the allowed ones (in
    // toAnthropicRequest); `required` means one of them — that one by name when it is the only one.
    const allowed = (choice as { allowed_tools?: AllowedTools }).allowed_tools;
    const required = allowed?.mode === "required";
    if (required && toolNames.length === 1) out = { type: "tool", name: toolNames[0] };
    else out = { type: required ? "any" : "auto" };
  } else if (choice && typeof choice === "object") {
    const name = (choice as { function?: { name?: unknown } }).function?.name;
    if (typeof name !== "string")
      throw new InvalidRequestError(
        "tool_choice.function.name is required.",
        "invalid_request",
        "tool_choice",
      );
    out = { type: "tool", name };
  }
  if (parallel === false && out?.type !== "none")
    out = { ...(out ?? { type: "auto" }), disable_parallel_tool_use: true };
  return out;
}

const EFFORT: Record<string, string> = {
  minimal: "low",
  low: "low",
  medium: "medium",
  high: "high",
  xhigh: "xhigh",
};

export function toAnthropicRequest(
  body: Record<string, unknown>,
  defaultMaxTokens: number,
): Record<string, unknown> {
  if (typeof body.n === "number" && body.n > 1) throw unsupported("n", "More than one choice (`n` > 1)");
  if (body.logprobs === true) throw unsupported("logprobs", "`logprobs`");
  const { system, turns: messages } = turns((body.messages ?? []) as ChatMessage[]);
  const out: Record<string, unknown> = {
    model: body.model,
    messages,
    max_tokens:
      (body.max_completion_tokens as number | null | undefined) ??
      (body.max_tokens as number | null | undefined) ??
      defaultMaxTokens,
  };
  if (system) out.system = system;
  if (typeof body.stop === "string") out.stop_sequences = [body.stop];
  else if (Array.isArray(body.stop) && body.stop.length > 0) out.stop_sequences = body.stop;
  if (typeof body.user === "string") out.metadata = { user_id: body.user };
  if (body.stream === true) out.stream = true;
  let toolList = tools(body.tools);
  const allowed =
    body.tool_choice && typeof body.tool_choice === "object"
      ? allowedToolNames((body.tool_choice as { allowed_tools?: AllowedTools }).allowed_tools)
      : null;
  if (allowed && (body.tool_choice as { type?: unknown }).type === "allowed_tools")
    toolList = toolList.filter((t) => allowed.has(t.name as string));
  if (toolList.length > 0) out.tools = toolList;
  // tool_choice without tools is refused: only with tools.
  const choice =
    toolList.length > 0
      ? toolChoice(
          body.tool_choice,
          body.parallel_tool_calls,
          toolList.map((t) => t.name as string),
        )
      : undefined;
  if (choice) out.tool_choice = choice;
  const config: Record<string, unknown> = {};
  const format = body.response_format as { type?: string; json_schema?: { schema?: unknown } } | undefined;
  // json_object ("any JSON object") has no Anthropic form: structured outputs need an object's properties, so it is
  // left to the prompt (OpenAI's JSON mode already requires the prompt to ask for JSON).
  if (format?.type === "json_schema" && format.json_schema?.schema !== undefined)
    config.format = { type: "json_schema", schema: closedObjects(format.json_schema.schema) };
  const effort = typeof body.reasoning_effort === "string" ? EFFORT[body.reasoning_effort] : undefined;
  if (effort) config.effort = effort;
  if (Object.keys(config).length > 0) out.output_config = config;
  return out;
}

/**
 * A JSON schema as Anthropic's structured outputs take it: every object closed (`additionalProperties: false`, which
 * Anthropic requires and OpenAI's non-strict schemas often leave out). A copy; the rest is as the client wrote it.
 */
export function closedObjects(schema: unknown, depth = 0): unknown {
  if (depth > 64 || typeof schema !== "object" || schema === null) return schema;
  if (Array.isArray(schema)) return schema.map((s) => closedObjects(s, depth + 1));
  const node = schema as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "properties" || k === "$defs" || k === "definitions" || k === "patternProperties") {
      out[k] =
        typeof v === "object" && v !== null && !Array.isArray(v)
          ? Object.fromEntries(Object.entries(v).map(([name, s]) => [name, closedObjects(s, depth + 1)]))
          : v;
    } else if (k === "enum" || k === "const" || k === "default" || k === "examples") out[k] = v;
    else out[k] = closedObjects(v, depth + 1);
  }
  const isObject =
    node.type === "object" ||
    (Array.isArray(node.type) && node.type.includes("object")) ||
    "properties" in node;
  if (isObject) out.additionalProperties = false;
  return out;
}

// ---------------------------------------------------------------- responses

interface AnthropicUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  /** The cache writes by lifetime: 1-hour writes are billed at 2 × input, 5-minute ones at 1.25 ×. */
  cache_creation?: {
    ephemeral_5m_input_tokens?: number | null;
    ephemeral_1h_input_tokens?: number | null;
  } | null;
}

export interface AnthropicMessage {
  id: string;
  model: string;
  content: Array<{ type: string; text?: string; id?: string; name?: string; input?: unknown }>;
  stop_reason: string | null;
  stop_sequence?: string | null;
  usage?: AnthropicUsage;
}

const FINISH: Record<string, string> = {
  end_turn: "stop",
  stop_sequence: "stop",
  pause_turn: "stop",
  max_tokens: "length",
  tool_use: "tool_calls",
  refusal: "content_filter",
  model_context_window_exceeded: "length",
};

/**
 * Stop reasons a chat finish_reason cannot carry (they become "stop" and "length"), kept in a field of ours on the
 * choice, `anthropic_stop_reason`, so /v1/messages hands them back as Anthropic sent them: `pause_turn` asks the
 * client to send the turn again to continue, which `end_turn` would hide.
 */
export const UNMAPPED_STOP_REASONS = new Set(["pause_turn", "model_context_window_exceeded"]);

function providerStop(stop: string | null | undefined): { anthropic_stop_reason?: string } {
  return stop && UNMAPPED_STOP_REASONS.has(stop) ? { anthropic_stop_reason: stop } : {};
}

function finishReason(stop: string | null | undefined): string | null {
  if (!stop) return null;
  return FINISH[stop] ?? "stop";
}

/** Merge reported counts: message_delta repeats fields as null when it has nothing new for them. */
function mergeUsage(into: AnthropicUsage, from: AnthropicUsage | undefined): void {
  for (const [k, v] of Object.entries(from ?? {})) {
    if (typeof v === "number") (into as Record<string, number>)[k] = v;
  }
  if (from?.cache_creation) into.cache_creation = { ...into.cache_creation, ...from.cache_creation };
}

function usageOf(u: AnthropicUsage): Usage {
  const oneHour = u.cache_creation?.ephemeral_1h_input_tokens ?? 0;
  const prompt =
    (u.input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0) + (u.cache_read_input_tokens ?? 0);
  const completion = u.output_tokens ?? 0;
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    // As OpenAI reports prompt-cache hits (a part of prompt_tokens); usage rows price them lower. Cache writes are a
    // part of prompt_tokens too, named as OpenRouter names them; usage rows price them higher.
    prompt_tokens_details: {
      cached_tokens: u.cache_read_input_tokens ?? 0,
      cache_write_tokens: u.cache_creation_input_tokens ?? 0,
      // Only when there are any (a field of ours, not OpenAI's): the 1-hour part of the writes, priced higher.
      ...(oneHour > 0 ? { cache_write_1h_tokens: oneHour } : {}),
    },
  };
}

export function fromAnthropicMessage(msg: AnthropicMessage): ChatCompletion {
  let text = "";
  const calls: ToolCall[] = [];
  for (const block of msg.content ?? []) {
    if (block.type === "text") text += block.text ?? "";
    else if (block.type === "tool_use")
      calls.push({
        id: block.id,
        type: "function",
        function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) },
      });
  }
  const message: ChatMessage = { role: "assistant", content: text === "" && calls.length > 0 ? null : text };
  if (calls.length > 0) message.tool_calls = calls;
  return {
    id: msg.id,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: msg.model,
    choices: [
      {
        index: 0,
        message,
        finish_reason: finishReason(msg.stop_reason) ?? "stop",
        // Which stop sequence ended the answer (a field of ours; /v1/messages hands it back as Anthropic sends it).
        ...(msg.stop_reason === "stop_sequence" && typeof msg.stop_sequence === "string"
          ? { stop_sequence: msg.stop_sequence }
          : {}),
        ...providerStop(msg.stop_reason),
      },
    ],
    usage: usageOf(msg.usage ?? {}),
  };
}

/** One Anthropic stream event (already parsed) → the chat.completion.chunks it stands for. */
export interface StreamTranslator {
  push(event: Record<string, unknown>): ChatCompletionChunk[];
}

export function createStreamTranslator(): StreamTranslator {
  let id = "";
  let model = "";
  const created = Math.floor(Date.now() / 1000);
  const usage: AnthropicUsage = {};
  /** Anthropic content-block index → OpenAI tool_calls index, and whether any argument text arrived for it. */
  const toolIndex = new Map<number, number>();
  const withArguments = new Set<number>();
  let tools = 0;
  const chunk = (delta: ChatCompletionChunk["choices"][number]["delta"], finish: string | null = null) => ({
    id,
    object: "chat.completion.chunk" as const,
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  });

  return {
    push(event) {
      switch (event.type) {
        case "message_start": {
          const m = event.message as { id?: string; model?: string; usage?: AnthropicUsage };
          id = m.id ?? "";
          model = m.model ?? "";
          mergeUsage(usage, m.usage);
          return [chunk({ role: "assistant", content: "" })];
        }
        case "content_block_start": {
          const index = event.index as number;
          const block = event.content_block as { type: string; id?: string; name?: string; text?: string };
          if (block.type === "tool_use") {
            const i = tools++;
            toolIndex.set(index, i);
            return [
              chunk({
                tool_calls: [
                  { index: i, id: block.id, type: "function", function: { name: block.name, arguments: "" } },
                ],
              }),
            ];
          }
          return block.type === "text" && block.text ? [chunk({ content: block.text })] : [];
        }
        case "content_block_delta": {
          const delta = event.delta as { type: string; text?: string; partial_json?: string };
          if (delta.type === "text_delta") return [chunk({ content: delta.text ?? "" })];
          if (delta.type !== "input_json_delta" || !delta.partial_json) return [];
          const i = toolIndex.get(event.index as number);
          if (i === undefined) return [];
          withArguments.add(i);
          return [chunk({ tool_calls: [{ index: i, function: { arguments: delta.partial_json } }] })];
        }
        case "content_block_stop": {
          // A tool without input streams no argument text: send "{}" as the JSON answer does.
          const i = toolIndex.get(event.index as number);
          if (i === undefined || withArguments.has(i)) return [];
          withArguments.add(i);
          return [chunk({ tool_calls: [{ index: i, function: { arguments: "{}" } }] })];
        }
        case "message_delta": {
          const d = event.delta as { stop_reason?: string | null; stop_sequence?: string | null };
          mergeUsage(usage, event.usage as AnthropicUsage | undefined);
          const last = chunk({}, finishReason(d.stop_reason) ?? "stop");
          if (d.stop_reason === "stop_sequence" && typeof d.stop_sequence === "string")
            (last.choices[0] as Record<string, unknown>).stop_sequence = d.stop_sequence;
          Object.assign(last.choices[0], providerStop(d.stop_reason));
          return [last];
        }
        case "message_stop":
          return [
            { id, object: "chat.completion.chunk", created, model, choices: [], usage: usageOf(usage) },
          ];
        default:
          // ping, thinking and signature deltas: nothing for the OpenAI wire format.
          return [];
      }
    },
  };
}
