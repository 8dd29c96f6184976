/**
 * Token-based chunking for the knowledge base. Chunks are measured in cl100k tokens (the tokenizer of OpenAI's
 * embedding models), so a chunk of `chunkTokens` fits the embedding model's input instead of being silently
 * truncated (Relay counts 512 *words* and its embedder keeps 256 word-pieces).
 *
 * Markdown is split on headings first (ATX and setext, outside fenced code), so a chunk never spans two sections and carries
 * its heading path; every section (or a whole non-Markdown file) is then packed from whitespace-led word units up to
 * `chunkTokens`, preferring to end a chunk at a line break, with about `overlapTokens` of the previous chunk repeated
 * at the start of the next. Chunks shorter than `minChars` (after trimming) carry too little to retrieve and are
 * skipped.
 */
import { countPlain } from "./tokens";

/** cl100k token count of `text`, treating special-token strings as text (the table loads on first use). */
export function countTokens(text: string): number {
  return countPlain(text, "cl100k_base");
}

export interface ChunkOptions {
  /** Maximum tokens per chunk (Config.rag.chunkTokens). */
  chunkTokens: number;
  /** Tokens repeated from the end of one chunk at the start of the next (Config.rag.chunkOverlap). */
  overlapTokens: number;
  /** Chunks shorter than this many characters (trimmed) are skipped. Default 50. */
  minChars?: number;
}

export interface Chunk {
  /** Position among the document's kept chunks, from 0. */
  index: number;
  text: string;
  /** Markdown heading path ("Install > Linux"); "" outside Markdown or before the first heading. */
  heading: string;
  tokens: number;
}

export type DocumentKind = "markdown" | "text";

interface Section {
  heading: string;
  text: string;
}

const HEADING_RE = /^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$/;
const FENCE_RE = /^ {0,3}(`{3,}|~{3,})/;
/** A setext underline: `===` (level 1) or `---` (level 2) under a one-line paragraph. */
const SETEXT_RE = /^ {0,3}(=+|-+)[ \t]*$/;
/** Lines that cannot be a setext heading's text: blank, indented code, list items, quotes, tables, ATX headings. */
const NOT_SETEXT_TEXT = /^(\s*$| {4}|\t| {0,3}([-*+]|\d+[.)])[ \t]| {0,3}[>|#])/;

/**
 * Split Markdown into sections at ATX headings and setext headings (a one-line paragraph underlined with `===` or
 * `---`); headings inside fenced code blocks are not headings.
 */
export function splitMarkdownSections(text: string): Section[] {
  const sections: Section[] = [];
  const path: string[] = [];
  let current: string[] = [];
  let heading = "";
  let fence: string | null = null;
  const flush = () => {
    const body = current.join("");
    if (body.trim()) sections.push({ heading, text: body });
    current = [];
  };
  const enter = (level: number, title: string) => {
    flush();
    path.length = Math.min(path.length, level - 1);
    while (path.length < level - 1) path.push("");
    path.push(title.trim());
    heading = path.filter(Boolean).join(" > ");
  };
  const lines = text.split(/(?<=\n)/);
  lines.forEach((line, i) => {
    const bare = line.replace(/\r?\n$/, "");
    const fenceMatch = FENCE_RE.exec(line);
    if (fenceMatch) {
      const marker = fenceMatch[1];
      if (fence === null) fence = marker;
      else if (marker[0] === fence[0] && marker.length >= fence.length) fence = null;
    } else if (fence === null) {
      const m = HEADING_RE.exec(bare);
      const underline = m ? null : SETEXT_RE.exec(bare);
      const above = i > 0 ? lines[i - 1].replace(/\r?\n$/, "") : "";
      if (m) enter(m[1].length, m[2]);
      else if (
        underline &&
        current.length > 0 &&
        current[current.length - 1] === lines[i - 1] &&
        !NOT_SETEXT_TEXT.test(above) &&
        (i < 2 || /^\s*$/.test(lines[i - 2]))
      ) {
        // The line above is the heading's text: it starts the new section.
        const title = current.pop()!;
        enter(underline[1][0] === "=" ? 1 : 2, above);
        current.push(title);
      }
    }
    current.push(line);
  });
  flush();
  return sections;
}

interface Unit {
  text: string;
  tokens: number;
  /** The unit starts a new line (a preferred place to end the previous chunk). */
  lineStart: boolean;
}

/** Whitespace-led word units: concatenated they give the text back exactly. Over-long words are cut. */
function toUnits(text: string, maxTokens: number): Unit[] {
  const units: Unit[] = [];
  for (const m of text.matchAll(/\s*\S+|\s+$/g)) {
    const piece = m[0];
    // BPE is slow on very long runs (base64, minified code); a piece this long is over any bound anyway.
    const tokens = piece.length > maxTokens * 16 ? Infinity : countTokens(piece);
    const lineStart = m.index === 0 || piece.includes("\n");
    if (tokens <= maxTokens) {
      units.push({ text: piece, tokens, lineStart });
      continue;
    }
    // A "word" longer than a chunk (minified code, base64, CJK prose without spaces): cut it into slices of at most
    // a quarter chunk, so packing can still fill a chunk around text before or after it and overlap neighbours. A
    // code point can be several tokens (CJK, emoji, rare scripts), so each slice is the longest run of code points
    // within that many tokens, found by searching on the count.
    const chars = Array.from(piece);
    const sliceTokens = Math.max(1, Math.floor(maxTokens / 4));
    for (let i = 0, take = sliceTokens; i < chars.length;) {
      take = longestFitting(chars, i, sliceTokens, take);
      const slice = chars.slice(i, i + take).join("");
      units.push({ text: slice, tokens: countTokens(slice), lineStart: i === 0 && lineStart });
      i += take;
    }
  }
  return units;
}

/**
 * How many code points from `chars[from]` on make the longest slice of at most `maxTokens` tokens (at least one: a
 * single code point is the smallest unit a slice can have). Tokens per code point vary both ways (base64 packs
 * several code points in a token, CJK and emoji take several tokens per code point), so the length is searched:
 * from `guess` (the previous slice's length: a long run is usually uniform, so two counts settle it), galloping up
 * while it fits, then by bisection. No slice is longer than 8 code points per token allowed.
 */
function longestFitting(chars: readonly string[], from: number, maxTokens: number, guess: number): number {
  const cap = Math.min(maxTokens * 8, chars.length - from);
  const fits = (n: number) => countTokens(chars.slice(from, from + n).join("")) <= maxTokens;
  let lo = 1;
  let hi = Math.max(1, Math.min(guess, cap));
  if (fits(hi)) {
    // lo fits; gallop up until a length does not (or the cap is reached).
    lo = hi;
    hi = cap;
    for (let step = 1; lo < cap; step *= 2) {
      const next = Math.min(cap, lo + step);
      if (!fits(next)) {
        hi = next - 1;
        break;
      }
      lo = next;
    }
  } else {
    hi -= 1;
  }
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

const joinUnits = (units: Unit[], from: number, to: number): string =>
  units
    .slice(from, to)
    .map((u) => u.text)
    .join("")
    .trim();

/**
 * Pack units into windows of at most `max` tokens (of the trimmed text) with about `overlap` tokens shared between
 * neighbours. A final window shorter than `minChars` would be dropped, losing the document's tail, so it is
 * rebuilt backwards from the end instead (a larger overlap with its predecessor).
 */
function pack(units: Unit[], max: number, overlap: number, minChars: number): string[] {
  const out: string[] = [];
  let start = 0;
  while (start < units.length) {
    let end = start;
    let sum = 0;
    while (end < units.length && sum + units[end].tokens <= max) sum += units[end++].tokens;
    if (end === start) end = start + 1; // cannot happen (units are ≤ max), but never loop forever
    if (end < units.length) {
      // Prefer to end at a line break in the last third of the window.
      const floor = start + Math.ceil(((end - start) * 2) / 3);
      for (let k = end - 1; k > floor; k--) {
        if (units[k].lineStart) {
          end = k;
          break;
        }
      }
    }
    // Summed per-unit counts can differ from the joined, trimmed text's count by a token or two (BPE merges across
    // unit edges; trimming turns " Word" into "Word"); enforce the bound on the real text.
    let text = joinUnits(units, start, end);
    while (end - start > 1 && countTokens(text) > max) text = joinUnits(units, start, --end);
    out.push(text);
    if (end >= units.length) break;
    // Next window: step back over trailing units while they fit in the overlap, but always move forward.
    let next = end;
    let shared = 0;
    while (next - 1 > start && shared + units[next - 1].tokens <= overlap) shared += units[--next].tokens;
    start = next;
  }
  if (out.length > 1 && out[out.length - 1].length < minChars) {
    let from = units.length;
    let sum = 0;
    while (from > 0 && sum + units[from - 1].tokens <= max) sum += units[--from].tokens;
    let text = joinUnits(units, from, units.length);
    while (units.length - from > 1 && countTokens(text) > max) text = joinUnits(units, ++from, units.length);
    out[out.length - 1] = text;
    if (out.length > 1 && out[out.length - 2] === text) out.pop();
  }
  return out;
}

/** Chunk one document. Markdown is split on headings first; chunk indexes count only the chunks kept. */
export function chunkDocument(text: string, kind: DocumentKind, opts: ChunkOptions): Chunk[] {
  const minChars = opts.minChars ?? 50;
  const overlap = Math.max(0, Math.min(opts.overlapTokens, opts.chunkTokens - 1));
  // A byte-order mark would sit before the first heading's `#`, which then is not a heading.
  const normalized = text.replace(/^\uFEFF/, "").replace(/\r\n?/g, "\n");
  const sections =
    kind === "markdown" ? splitMarkdownSections(normalized) : [{ heading: "", text: normalized }];
  const chunks: Chunk[] = [];
  for (const section of sections) {
    for (const chunkText of pack(
      toUnits(section.text, opts.chunkTokens),
      opts.chunkTokens,
      overlap,
      minChars,
    )) {
      if (chunkText.length < minChars) continue;
      chunks.push({
        index: chunks.length,
        text: chunkText,
        heading: section.heading,
        tokens: countTokens(chunkText),
      });
    }
  }
  return chunks;
}
