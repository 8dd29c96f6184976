// The PII engine: options resolved once, detectors combined, overlaps settled deterministically.
import { detectCompromise, loadCompromise } from "./compromise";
import { detectNames, loadGazetteer } from "./names";
import { detectPatterns, loadPhoneMetadata } from "./patterns";
import { Session, type PiiSession } from "./session";
import { PII_ENTITIES, type PiiEntity, type PiiOptions, type Span } from "./types";

export interface PiiEngine {
  /** Enabled, non-allow-listed entities in `text`, sorted by start, non-overlapping. */
  detect(text: string): Span[];
  /** A fresh per-request session (own placeholders, own counts). */
  newSession(): PiiSession;
}

// Overlaps: a validated pattern beats a name guess; among patterns the more specific format wins.
export const PRIORITY: Record<PiiEntity, number> = {
  INTERNAL_SECRET: 0,
  EMAIL_ADDRESS: 1,
  IBAN: 2,
  CREDIT_CARD: 3,
  US_SSN: 4,
  IP_ADDRESS: 5,
  PHONE_NUMBER: 6,
  PERSON: 7,
  LOCATION: 8,
};

function bySpanOrder(a: Span, b: Span): number {
  return PRIORITY[a.entity] - PRIORITY[b.entity] || a.start - b.start || b.end - a.end;
}

const overlap = (a: Span, b: Span) => a.start < b.end && b.start < a.end;

/**
 * Keeps spans in priority order, dropping any that overlaps one already kept; returns them by start.
 * In O(n log n): one entity at a time (each has its own priority), its spans by start, each checked against the
 * entity's last kept span and, with a pointer moving forward only, the spans kept for earlier entities (sorted,
 * non-overlapping); then merged in. Checking every kept span took seconds for a prompt of 100,000 short e-mails,
 * blocking the worker.
 */
export function resolveOverlaps(spans: Span[]): Span[] {
  if (spans.length <= 1) return spans;
  spans.sort(bySpanOrder);
  let kept: Span[] = [];
  for (let from = 0; from < spans.length;) {
    const entity = spans[from].entity;
    let to = from;
    while (to < spans.length && spans[to].entity === entity) to++;
    const accepted: Span[] = [];
    let j = 0;
    for (let g = from; g < to; g++) {
      const s = spans[g];
      const last = accepted[accepted.length - 1];
      // Among this entity's kept spans (sorted, non-overlapping) only the last can reach past s.start.
      if (last !== undefined && overlap(s, last)) continue;
      while (j < kept.length && kept[j].end <= s.start) j++;
      let clash = false;
      for (let k = j; k < kept.length && kept[k].start < s.end; k++) {
        if (overlap(s, kept[k])) {
          clash = true;
          break;
        }
      }
      if (!clash) accepted.push(s);
    }
    kept = mergeByStart(kept, accepted);
    from = to;
  }
  return kept;
}

function mergeByStart(a: Span[], b: Span[]): Span[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const out: Span[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) out.push(a[i].start <= b[j].start ? a[i++] : b[j++]);
  while (i < a.length) out.push(a[i++]);
  while (j < b.length) out.push(b[j++]);
  return out;
}

export function createPiiEngine(opts: PiiOptions): PiiEngine {
  const enabled = new Set<PiiEntity>();
  for (const e of PII_ENTITIES) if (opts.entities?.[e] !== false) enabled.add(e);
  if (opts.names === "off") {
    enabled.delete("PERSON");
    enabled.delete("LOCATION");
  }
  const names = enabled.has("PERSON") || enabled.has("LOCATION") ? opts.names : "off";
  if (names === "gazetteer") loadGazetteer();
  if (names === "compromise") loadCompromise();
  const allow = new Set((opts.allowList ?? []).map((v) => v.toLowerCase()));
  const on = opts.enabled && enabled.size > 0;
  if (on && enabled.has("PHONE_NUMBER")) loadPhoneMetadata();

  function detect(text: string): Span[] {
    if (!on || text.length === 0) return [];
    const spans: Span[] = [];
    detectPatterns(text, enabled, spans);
    if (names === "gazetteer") detectNames(text, enabled, spans);
    else if (names === "compromise") detectCompromise(text, enabled, spans);
    let out = resolveOverlaps(spans);
    if (allow.size > 0) out = out.filter((s) => !allow.has(text.slice(s.start, s.end).toLowerCase()));
    return out;
  }

  return {
    detect,
    newSession: () => new Session(on ? detect : null),
  };
}
