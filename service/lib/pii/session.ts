// Per-request scrub state: value ↔ placeholder maps, entity counts, and the streaming restorer.
import { randomUUID } from "node:crypto";
import { PII_ENTITIES, type PiiCounts, type PiiEntity, type Span } from "./types";

/** Every reversible placeholder: `<<PII_<ENTITY>_<32 lowercase hex>>>`. */
export const PLACEHOLDER_RE = /<<PII_[A-Z_]+_[0-9a-f]{32}>>/g;
const PLACEHOLDER_HEAD = "<<PII_";
/** Irreversible marker for secrets in caller content (never restored). */
export const SECRET_MARKER = "<<REDACTED_INTERNAL_SECRET>>";

/** Irreversible marker used by `redact` (embeddings input, RAG chunks). */
export function redactionMarker(entity: PiiEntity): string {
  return `<<REDACTED_${entity}>>`;
}

export interface RestoreOptions {
  /**
   * The text is the inside of JSON string literals (tool-call arguments): restored values are JSON-escaped
   * so the arguments stay valid JSON. Default false.
   */
  json?: boolean;
}

/** Restores placeholders in text that arrives in pieces (a streamed completion). */
export interface StreamRestorer {
  /**
   * Returns the restored text that can be released now. Only a suffix that is a proper prefix of a
   * placeholder issued in this session is held back (never more than one placeholder's length); when
   * nothing is pending the whole chunk comes back at once.
   */
  push(chunk: string): string;
  /** Releases whatever is still held (at stream end). */
  flush(): string;
}

export interface PiiSession {
  /** Replaces detected values with reversible placeholders (secrets with an irreversible marker). */
  scrub(text: string): string;
  /** Replaces detected values with irreversible `<<REDACTED_<ENTITY>>>` markers. */
  redact(text: string): string;
  /** Puts back the values of placeholders issued by this session; unknown placeholders stay as they are. */
  restore(text: string, opts?: RestoreOptions): string;
  /** Occurrences scrubbed or redacted so far, per entity (never values). */
  counts(): PiiCounts;
  createStreamRestorer(opts?: RestoreOptions): StreamRestorer;
}

export type Detect = (text: string) => Span[];

export function emptyCounts(): PiiCounts {
  const c = {} as PiiCounts;
  for (const e of PII_ENTITIES) c[e] = 0;
  return c;
}

export class Session implements PiiSession {
  private readonly byValue = new Map<string, string>();
  private readonly byPlaceholder = new Map<string, string>();
  private readonly tally: PiiCounts = emptyCounts();
  private longest = 0;

  constructor(private readonly detect: Detect | null) {}

  scrub(text: string): string {
    return this.replace(text, true);
  }

  redact(text: string): string {
    return this.replace(text, false);
  }

  restore(text: string, opts?: RestoreOptions): string {
    if (this.byPlaceholder.size === 0 || text.indexOf(PLACEHOLDER_HEAD) < 0) return text;
    const json = opts?.json === true;
    return text.replace(PLACEHOLDER_RE, (ph) => {
      const v = this.byPlaceholder.get(ph);
      if (v === undefined) return ph;
      return json ? JSON.stringify(v).slice(1, -1) : v;
    });
  }

  counts(): PiiCounts {
    return { ...this.tally };
  }

  createStreamRestorer(opts?: RestoreOptions): StreamRestorer {
    let pending = "";
    return {
      push: (chunk) => {
        const s = pending + chunk;
        pending = "";
        if (this.byPlaceholder.size === 0) return s;
        const cut = this.heldSuffixStart(s);
        if (cut === s.length) return this.restore(s, opts);
        pending = s.slice(cut);
        return this.restore(s.slice(0, cut), opts);
      },
      flush: () => {
        const s = pending;
        pending = "";
        return this.restore(s, opts);
      },
    };
  }

  /** Index of the earliest suffix of `s` that is a proper prefix of an issued placeholder, else s.length. */
  private heldSuffixStart(s: string): number {
    const from = Math.max(0, s.length - this.longest + 1);
    for (let i = s.indexOf("<", from); i >= 0; i = s.indexOf("<", i + 1)) {
      if (this.isIssuedPrefix(s, i)) return i;
    }
    return s.length;
  }

  private isIssuedPrefix(s: string, i: number): boolean {
    const n = s.length - i;
    if (n <= PLACEHOLDER_HEAD.length) return s.startsWith(PLACEHOLDER_HEAD.slice(0, n), i);
    if (!s.startsWith(PLACEHOLDER_HEAD, i)) return false;
    const suffix = s.slice(i);
    for (const ph of this.byPlaceholder.keys()) {
      if (ph.length > n && ph.startsWith(suffix)) return true;
    }
    return false;
  }

  private placeholderFor(entity: PiiEntity, value: string): string {
    const key = entity + "\u0000" + value;
    let ph = this.byValue.get(key);
    if (ph === undefined) {
      ph = `<<PII_${entity}_${randomUUID().replace(/-/g, "")}>>`;
      this.byValue.set(key, ph);
      this.byPlaceholder.set(ph, value);
      if (ph.length > this.longest) this.longest = ph.length;
    }
    return ph;
  }

  private replace(text: string, reversible: boolean): string {
    if (this.detect === null || text.length === 0) return text;
    const spans = this.detect(text);
    if (spans.length === 0) return text;
    let out = "";
    let last = 0;
    for (const sp of spans) {
      out += text.slice(last, sp.start);
      const value = text.slice(sp.start, sp.end);
      if (!reversible) out += redactionMarker(sp.entity);
      else if (sp.entity === "INTERNAL_SECRET") out += SECRET_MARKER;
      else out += this.placeholderFor(sp.entity, value);
      this.tally[sp.entity]++;
      last = sp.end;
    }
    return out + text.slice(last);
  }
}
