/**
 * Wire types of the OpenAI-compatible API, as loose as the proxy needs: known fields are typed, everything else
 * travels through untouched (the proxy forwards fields it does not know).
 */

/**
 * Marks a `tool` message that reports a failed tool call (an Anthropic `tool_result` with `is_error: true`). Chat
 * completions has no such flag, so the text also starts with `Error: ` for OpenAI-compatible providers; an Anthropic
 * provider sends the flag instead of the prefix. A symbol: copied by object spread (the PII scrub's copies keep it),
 * never serialized (no provider receives an unknown field).
 */
export const TOOL_ERROR: unique symbol = Symbol("llmproxy.tool_error");
export const TOOL_ERROR_PREFIX = "Error: ";

export interface ChatMessage {
  role: string;
  content?: string | ContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  [TOOL_ERROR]?: true;
  [extra: string]: unknown;
}

/**
 * Model text a message or a delta may carry besides `content`: a refusal, and the reasoning that DeepSeek, vLLM and
 * other OpenAI-compatible servers return (and clients send back in history). Scrubbed and restored by PII, checked by
 * the content policy, counted in an answer without usage.
 */
export const MODEL_TEXT_FIELDS = ["refusal", "reasoning_content", "reasoning"] as const;

export interface ContentPart {
  type: string;
  text?: string;
  [extra: string]: unknown;
}

export interface ToolCall {
  id?: string;
  type?: string;
  function?: { name?: string; arguments?: string };
  [extra: string]: unknown;
}

export interface ChatCompletionRequest {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean; [extra: string]: unknown } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  n?: number | null;
  [extra: string]: unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [extra: string]: unknown;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: ChatMessage;
    finish_reason: string | null;
    [extra: string]: unknown;
  }>;
  usage?: Usage;
  [extra: string]: unknown;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: {
      role?: string;
      content?: string | null;
      tool_calls?: Array<{
        index: number;
        id?: string;
        type?: string;
        function?: { name?: string; arguments?: string };
      }>;
      [extra: string]: unknown;
    };
    finish_reason: string | null;
    [extra: string]: unknown;
  }>;
  usage?: Usage | null;
  [extra: string]: unknown;
}

export interface EmbeddingRequest {
  model: string;
  input: string | string[] | number[] | number[][];
  [extra: string]: unknown;
}

export interface EmbeddingResponse {
  object: "list";
  data: Array<{ object: "embedding"; index: number; embedding: number[] | string }>;
  model: string;
  usage?: { prompt_tokens: number; total_tokens: number };
  [extra: string]: unknown;
}
