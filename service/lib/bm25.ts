/**
 * BM25 over a small candidate set (the dense candidates of one query), for hybrid retrieval. The statistics (document
 * frequency, average length) are those of the candidate set, as in Relay; that is enough to rank exact-term matches
 * (error codes, identifiers, config keys) that embeddings tend to miss.
 */

/** Words that match nearly every document and only add noise to a short query. */
const STOP_WORDS = new Set(
  (
    "a an and are as at be but by can do does for from has have how i if in into is it its me my of on or our so " +
    "that the their them then there these they this to was we were what when where which who why will with you your"
  ).split(" "),
);

/** Letters, digits and `_`, so `snake_case` and `v2` stay whole; dotted and dashed names split into parts. */
const TERM_RE = /[\p{L}\p{N}_]+/gu;

/** Lower-cased terms of at least 2 characters, stop words removed. */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const m of text.toLowerCase().matchAll(TERM_RE)) {
    const term = m[0];
    if (term.length >= 2 && !STOP_WORDS.has(term)) out.push(term);
  }
  return out;
}

export interface Bm25Options {
  /** Term-frequency saturation. Default 1.2. */
  k1?: number;
  /** Length normalisation. Default 0.75. */
  b?: number;
}

/** BM25 score of every document for `query` (0 when no query term occurs), in the documents' order. */
export function bm25Scores(query: string, documents: readonly string[], opts: Bm25Options = {}): number[] {
  const k1 = opts.k1 ?? 1.2;
  const b = opts.b ?? 0.75;
  const terms = [...new Set(tokenize(query))];
  const n = documents.length;
  if (!terms.length || !n) return documents.map(() => 0);
  const docs = documents.map((d) => {
    const tf = new Map<string, number>();
    const tokens = tokenize(d);
    for (const t of tokens) tf.set(t, (tf.get(t) ?? 0) + 1);
    return { tf, length: tokens.length };
  });
  const avgLength = docs.reduce((s, d) => s + d.length, 0) / n || 1;
  const idf = new Map<string, number>();
  for (const term of terms) {
    const df = docs.reduce((s, d) => s + (d.tf.has(term) ? 1 : 0), 0);
    // The "+1" form never goes negative, so a term present in most candidates still counts a little.
    idf.set(term, Math.log(1 + (n - df + 0.5) / (df + 0.5)));
  }
  return docs.map((d) => {
    let score = 0;
    for (const term of terms) {
      const f = d.tf.get(term);
      if (!f) continue;
      score += (idf.get(term)! * (f * (k1 + 1))) / (f + k1 * (1 - b + (b * d.length) / avgLength));
    }
    return score;
  });
}
