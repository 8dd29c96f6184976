/**
 * Content policy: blocked patterns (literals or regexes, compiled once at start by config.ts) checked against
 * every text the provider would see. A match is a 400 `content_policy_violation` with a fixed message that
 * reveals neither the pattern nor the matched text.
 */
import type { Middleware } from "koa";
import { Counter } from "prom-client";
import type { Config } from "../config";
import { ProxyError } from "../errors";
import { registry } from "../metrics";
import type { ProxyState } from "../state";
import { MODEL_TEXT_FIELDS, type ChatCompletionRequest, type ChatMessage } from "../types";

const blocked = new Counter({
  name: "llmproxy_content_policy_blocked_total",
  help: "Requests refused by the content policy, by route.",
  labelNames: ["route"] as const,
  registers: [registry],
});

export class ContentPolicyError extends ProxyError {
  constructor() {
    super(
      400,
      "invalid_request_error",
      "content_policy_violation",
      "The request was blocked by the content policy.",
    );
  }
}

/**
 * The texts of tool-call arguments as the model reads them: the raw text, and every string literal in it (keys and
 * values) decoded, since a client can write `Falc\u006fn`. The literals are scanned in the text rather than taken
 * from `JSON.parse`, which keeps only the last of duplicate keys: `{"q":"Project Falcon","q":"x"}` reaches the model
 * whole. A scan in one pass: a regex for string literals backtracks quadratically on `"\"\"\"…`.
 */
function* argumentTexts(args: string): Generator<string> {
  yield args;
  for (let start = args.indexOf('"'); start !== -1;) {
    let end = start + 1;
    let escaped = false;
    while (end < args.length) {
      const c = args.charCodeAt(end);
      if (c === 0x22) break;
      if (c === 0x5c) {
        escaped = true;
        end += 2;
      } else end++;
    }
    if (end >= args.length) return;
    if (!escaped) yield args.slice(start + 1, end);
    else {
      try {
        yield JSON.parse(args.slice(start, end + 1)) as string;
      } catch {
        // Not a JSON string (an invalid escape): the model reads it as written, checked above.
      }
    }
    start = args.indexOf('"', end + 1);
  }
}

/**
 * Between the strings of a definition: neither white space (a literal's `\s+`) nor `.` crosses it, so two strings do
 * not read as one phrase (the walk's order is not the order the provider renders them in); `^`/`$` with the `m` flag
 * still match at each string's ends.
 */
const BETWEEN = "\n\u0000\n";

/**
 * The keys and string values of a definition (a tool, a response format), as one text: one check per definition
 * rather than per string (20 tools are ~600 strings).
 */
function definitionText(value: unknown): string {
  const strings: string[] = [];
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v === "string") strings.push(v);
    else if (typeof v !== "object" || v === null) continue;
    // One at a time: spreading an array of ~100,000 items (an `enum`) overflows the call stack.
    else if (Array.isArray(v)) for (const item of v as unknown[]) stack.push(item);
    else
      for (const key in v) {
        strings.push(key);
        stack.push((v as Record<string, unknown>)[key]);
      }
  }
  return strings.join(BETWEEN);
}

/** The texts of a `content` (a string or parts), and the parts' texts joined (a phrase split over two parts). */
function* contentTexts(content: unknown): Generator<string> {
  if (typeof content === "string") {
    yield content;
    return;
  }
  if (!Array.isArray(content)) return;
  let joined = "";
  let texts = 0;
  for (const part of content as Array<{ text?: unknown; refusal?: unknown }>) {
    const text =
      typeof part?.text === "string" ? part.text : typeof part?.refusal === "string" ? part.refusal : null;
    if (text === null) continue;
    yield text;
    joined += text;
    texts++;
  }
  if (texts > 1) yield joined;
}

/** Every text of a message the provider would see. */
export function* messageTexts(m: ChatMessage): Generator<string> {
  yield* contentTexts(m.content);
  for (const field of MODEL_TEXT_FIELDS) {
    const text = m[field];
    if (typeof text === "string") yield text;
  }
  if (Array.isArray(m.tool_calls)) {
    for (const call of m.tool_calls) {
      if (typeof call.function?.arguments === "string") yield* argumentTexts(call.function.arguments);
      const custom = call.custom as { input?: unknown } | undefined | null;
      if (typeof custom?.input === "string") yield custom.input;
    }
  }
  const fc = m.function_call as { arguments?: unknown } | undefined | null;
  if (typeof fc?.arguments === "string") yield* argumentTexts(fc.arguments);
}

/**
 * Every text of a chat request the provider would see: its messages, its predicted output, and the definitions it
 * renders into the prompt (tools and legacy functions: names, descriptions, parameter schemas; a response format's
 * schema).
 */
export function* chatTexts(chat: ChatCompletionRequest): Generator<string> {
  for (const m of chat.messages) yield* messageTexts(m);
  const prediction = chat.prediction as { content?: unknown } | undefined | null;
  if (typeof prediction === "object" && prediction !== null) yield* contentTexts(prediction.content);
  for (const definitions of [chat.tools, chat.functions])
    if (Array.isArray(definitions)) for (const d of definitions as unknown[]) yield definitionText(d);
  if (typeof chat.response_format === "object" && chat.response_format !== null)
    yield definitionText(chat.response_format);
}

/**
 * Invisible characters (zero-width space and joiners, soft hyphen, word joiner, BOM, Hangul fillers after NFKC …): a
 * model reads past them, as nothing inside a word ("Fal\u200bcon") or as the space between two ("Project\u200bFalcon").
 */
const IGNORABLE = /\p{Default_Ignorable_Code_Point}+/gu;

// eslint-disable-next-line no-control-regex -- the whole ASCII range, control characters included
const ASCII_ONLY = /^[\x00-\x7f]*$/;

/**
 * A source that is a plain sequence of characters and `\s+` (every literal pattern; also `/drop\s+table/i`), split
 * into those: `\s+`, an escaped character, or one code point.
 */
const SEQUENCE = /^(?:\\s\+|\\[\\^$.*+?()[\]{}|/]|[^\\^$.*+?()[\]{}|])+$/u;
const SEQUENCE_ITEM = /\\s\+|\\.|[^]/gu;

/**
 * The pattern for a sequence source that also matches with invisible characters anywhere in it: between two
 * characters and as (or in) a space, in any mix ("Pro\u2060ject\u200bFalcon"). Each gap takes one quantifier, so
 * matching stays linear on a long run of them. null for other sources.
 */
function looseVariant(re: RegExp): RegExp | null {
  if (!SEQUENCE.test(re.source)) return null;
  const items = re.source.match(SEQUENCE_ITEM) ?? [];
  let source = "";
  items.forEach((item, i) => {
    if (item === "\\s+") source += "[\\s\\p{Default_Ignorable_Code_Point}]+";
    else source += (i > 0 && items[i - 1] !== "\\s+" ? "\\p{Default_Ignorable_Code_Point}*" : "") + item;
  });
  try {
    return new RegExp(source, re.flags.includes("u") ? re.flags : `${re.flags}u`);
  } catch {
    return null;
  }
}

export interface BlockedPattern {
  /** The pattern as configured (unicode mode: case folding catches look-alikes such as "ſ" for "s"). */
  re: RegExp;
  /**
   * The same pattern without the `u` flag, for ASCII-only texts, where it matches exactly the same: V8 runs
   * case-insensitive unicode patterns with `\b` about 10× slower (1.3 µs against 0.1 µs on a 300-character prompt).
   * null when the source is not plain ASCII or uses an escape whose meaning depends on `u` (`\u`, `\p`, `\P`).
   */
  ascii: RegExp | null;
  /** For texts with invisible characters: see looseVariant (null: the pattern is tried on both readings instead). */
  loose: RegExp | null;
}

export function compilePolicy(patterns: readonly RegExp[]): BlockedPattern[] {
  return patterns.map((re) => {
    const plain = ASCII_ONLY.test(re.source) && !/\\[upP]/.test(re.source) && re.flags.includes("u");
    let ascii: RegExp | null = null;
    if (plain) {
      try {
        ascii = new RegExp(re.source, re.flags.replace("u", ""));
      } catch {
        // not a pattern without `u`: every text takes the configured one
      }
    }
    return { re, ascii, loose: looseVariant(re) };
  });
}

function test(re: RegExp, text: string): boolean {
  re.lastIndex = 0;
  return re.test(text);
}

function matches(patterns: readonly BlockedPattern[], text: string, ascii: boolean): boolean {
  for (const p of patterns) if (test(ascii && p.ascii ? p.ascii : p.re, text)) return true;
  return false;
}

/**
 * Whether any pattern matches the text as written or as a model reads it: compatibility forms folded (NFKC: fullwidth
 * "Ｆａｌｃｏｎ", ligatures), and invisible characters read both as nothing and as a space. ASCII text is already
 * that, so it takes one pass; a non-ASCII text is tried as written too, so a pattern for a special character matches.
 */
export function blocks(patterns: readonly BlockedPattern[], text: string): boolean {
  if (ASCII_ONLY.test(text)) return matches(patterns, text, true);
  if (matches(patterns, text, false)) return true;
  const folded = text.normalize("NFKC");
  const dropped = folded.replace(IGNORABLE, "");
  if (dropped === folded) return folded !== text && matches(patterns, folded, ASCII_ONLY.test(folded));
  // A pattern with a loose variant reads the invisible characters both ways in one pass; the others try both forms.
  for (const p of patterns) if (p.loose && test(p.loose, folded)) return true;
  const others = patterns.filter((p) => !p.loose);
  // The two forms differ only in characters that were not ASCII: both are ASCII or neither.
  const ascii = ASCII_ONLY.test(dropped);
  return (
    others.length > 0 &&
    (matches(others, dropped, ascii) || matches(others, folded.replace(IGNORABLE, " "), ascii))
  );
}

export function createContentPolicy(deps: { config: Config }): Middleware<ProxyState> {
  const patterns = compilePolicy(deps.config.contentPolicy.blockedPatterns);
  return async function contentPolicy(ctx, next) {
    if (patterns.length) {
      const texts: string[] = [];
      if (ctx.state.chat) for (const text of chatTexts(ctx.state.chat)) texts.push(text);
      const input = ctx.state.embedding?.input;
      if (typeof input === "string") texts.push(input);
      else if (Array.isArray(input)) for (const x of input) if (typeof x === "string") texts.push(x);
      for (const text of texts) {
        if (blocks(patterns, text)) {
          blocked.inc({ route: ctx.state.route });
          throw new ContentPolicyError();
        }
      }
    }
    return next();
  };
}
