// Per-request scrub state: value ↔ placeholder maps, entity counts, and the streaming restorer.
import { randomHex } from "../random-hex";
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

/** What restoring needs: placeholders → replacements, whole or streamed. */
export interface Restorer {
  /** Replaces known placeholders; unknown placeholders stay as they are. */
  restore(text: string, opts?: RestoreOptions): string;
  createStreamRestorer(opts?: RestoreOptions): StreamRestorer;
}

export interface PiiSession extends Restorer {
  /** Replaces detected values with reversible placeholders (secrets with an irreversible marker). */
  scrub(text: string): string;
  /** Replaces detected values with irreversible `<<REDACTED_<ENTITY>>>` markers. */
  redact(text: string): string;
  /** Puts back the values of placeholders issued by this session; unknown placeholders stay as they are. */
  restore(text: string, opts?: RestoreOptions): string;
  /** Occurrences scrubbed or redacted so far, per entity (never values). */
  counts(): PiiCounts;
  /** The reversible placeholders issued so far, in the order they were issued. */
  placeholders(): string[];
}

export type Detect = (text: string) => Span[];

export function emptyCounts(): PiiCounts {
  const c = {} as PiiCounts;
  for (const e of PII_ENTITIES) c[e] = 0;
  return c;
}

/** Restores placeholders through a map from placeholder to replacement (in text, and in text that arrives in pieces). */
export class PlaceholderMap implements Restorer {
  private readonly map = new Map<string, string>();
  private longest = 0;

  set(placeholder: string, replacement: string): void {
    this.map.set(placeholder, replacement);
    if (placeholder.length > this.longest) this.longest = placeholder.length;
  }

  /** Placeholders in the order they were added. */
  placeholders(): string[] {
    return [...this.map.keys()];
  }

  restore(text: string, opts?: RestoreOptions): string {
    if (this.map.size === 0 || text.indexOf(PLACEHOLDER_HEAD) < 0) return text;
    const json = opts?.json === true;
    return text.replace(PLACEHOLDER_RE, (ph) => {
      const v = this.map.get(ph);
      if (v === undefined) return ph;
      return json ? JSON.stringify(v).slice(1, -1) : v;
    });
  }

  createStreamRestorer(opts?: RestoreOptions): StreamRestorer {
    let pending = "";
    return {
      push: (chunk) => {
        const s = pending + chunk;
        pending = "";
        if (this.map.size === 0) return s;
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

  /** Index of the earliest suffix of `s` that is a proper prefix of a known placeholder, else s.length. */
  private heldSuffixStart(s: string): number {
    const from = Math.max(0, s.length - this.longest + 1);
    for (let i = s.indexOf("<", from); i >= 0; i = s.indexOf("<", i + 1)) {
      if (this.isKnownPrefix(s, i)) return i;
    }
    return s.length;
  }

  private isKnownPrefix(s: string, i: number): boolean {
    const n = s.length - i;
    if (n <= PLACEHOLDER_HEAD.length) return s.startsWith(PLACEHOLDER_HEAD.slice(0, n), i);
    if (!s.startsWith(PLACEHOLDER_HEAD, i)) return false;
    const suffix = s.slice(i);
    for (const ph of this.map.keys()) {
      if (ph.length > n && ph.startsWith(suffix)) return true;
    }
    return false;
  }
}

export class Session implements PiiSession {
  private readonly byValue = new Map<string, string>();
  private readonly byPlaceholder = new PlaceholderMap();
  private readonly tally: PiiCounts = emptyCounts();

  constructor(private readonly detect: Detect | null) {}

  scrub(text: string): string {
    return this.replace(text, true);
  }

  redact(text: string): string {
    return this.replace(text, false);
  }

  restore(text: string, opts?: RestoreOptions): string {
    return this.byPlaceholder.restore(text, opts);
  }

  counts(): PiiCounts {
    return { ...this.tally };
  }

  placeholders(): string[] {
    return this.byPlaceholder.placeholders();
  }

  createStreamRestorer(opts?: RestoreOptions): StreamRestorer {
    return this.byPlaceholder.createStreamRestorer(opts);
  }

  private placeholderFor(entity: PiiEntity, value: string): string {
    const key = entity + "\u0000" + value;
    let ph = this.byValue.get(key);
    if (ph === undefined) {
      ph = `<<PII_${entity}_${randomHex(32)}>>`;
      this.byValue.set(key, ph);
      this.byPlaceholder.set(ph, value);
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

/**
 * Canonical placeholders, for the response cache. Placeholders are random per request, so the same prompt scrubs to
 * a different text every time. Numbering them in the order they were issued (`<<PII_EMAIL_ADDRESS_000…001>>`: same
 * shape, the ordinal in the hex digits) makes the scrubbed prompt — all the provider ever sees, and so all its
 * answer can depend on — the same for every request that scrubs alike, without holding any value.
 */
export interface CanonicalMaps {
  /** This request's placeholders → canonical ones (cache key, stored answer). */
  toCanonical: PlaceholderMap;
  /** Canonical placeholders → this request's (a cached answer, before PII restore puts the values back). */
  fromCanonical: PlaceholderMap;
}

/** A placeholder in canonical form: 16 leading zero hex digits (a random one has them with p = 2^-64). */
export const CANONICAL_PLACEHOLDER_RE = /<<PII_[A-Z_]+_0{16}[0-9a-f]{16}>>/;

export function canonicalPlaceholder(placeholder: string, ordinal: number): string {
  const entity = placeholder.slice(PLACEHOLDER_HEAD.length, placeholder.length - 35);
  return `${PLACEHOLDER_HEAD}${entity}_${ordinal.toString(16).padStart(32, "0")}>>`;
}

export function canonicalMaps(placeholders: readonly string[]): CanonicalMaps {
  const toCanonical = new PlaceholderMap();
  const fromCanonical = new PlaceholderMap();
  placeholders.forEach((ph, i) => {
    const canonical = canonicalPlaceholder(ph, i + 1);
    toCanonical.set(ph, canonical);
    fromCanonical.set(canonical, ph);
  });
  return { toCanonical, fromCanonical };
}
