// Optional PERSON/LOCATION detector backed by compromise's NER (`names: "compromise"`). Loaded on demand:
// it costs ≈1 s and ≈110 MB at start and scrubs ≈0.1 MB/s, so it is not the default (see names.ts).
import type { PiiEntity, Span } from "./types";

interface Match {
  offset: { start: number; length: number };
  terms: Array<{ text: string; offset: { start: number; length: number }; tags: string[] }>;
}
interface View {
  people(): { json(opts: { offset: true }): Match[] };
  places(): { json(opts: { offset: true }): Match[] };
}
type Nlp = (text: string) => View;

let nlp: Nlp | null = null;

export function loadCompromise(): void {
  // A synchronous require on purpose: the engine is built synchronously at start, and compromise must not
  // be loaded at all unless this mode is chosen.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (nlp === null) nlp = require("compromise") as Nlp;
}

const TRIM_RE = /[\s.,;:!?'"’)(\]]/;

function pushTerms(m: Match, entity: PiiEntity, out: Span[]): void {
  // Drop honorifics ("Dr.") and surrounding punctuation that compromise keeps in the match text.
  const terms = m.terms.filter((t) => !t.tags.includes("Honorific"));
  if (terms.length === 0) return;
  const start = terms[0]!.offset.start;
  const end = terms[terms.length - 1]!.offset.start + terms[terms.length - 1]!.offset.length;
  if (end > start) out.push({ entity, start, end });
}

export function detectCompromise(text: string, enabled: ReadonlySet<PiiEntity>, out: Span[]): void {
  if (nlp === null) return;
  const doc = nlp(text);
  const found: Span[] = [];
  if (enabled.has("PERSON"))
    for (const m of doc.people().json({ offset: true })) pushTerms(m, "PERSON", found);
  if (enabled.has("LOCATION"))
    for (const m of doc.places().json({ offset: true })) pushTerms(m, "LOCATION", found);
  for (const s of found) {
    while (s.end > s.start && TRIM_RE.test(text[s.end - 1]!)) s.end--;
    while (s.start < s.end && TRIM_RE.test(text[s.start]!)) s.start++;
    if (s.end > s.start) out.push(s);
  }
}
