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
const PRIORITY: Record<PiiEntity, number> = {
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

/** Keeps spans in priority order, dropping any that overlaps one already kept; returns them by start. */
export function resolveOverlaps(spans: Span[]): Span[] {
  if (spans.length <= 1) return spans;
  spans.sort(bySpanOrder);
  const kept: Span[] = [];
  for (const s of spans) {
    let clash = false;
    for (const k of kept) {
      if (s.start < k.end && k.start < s.end) {
        clash = true;
        break;
      }
    }
    if (!clash) kept.push(s);
  }
  return kept.sort((a, b) => a.start - b.start);
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
