// Loads the labelled corpus and scores a detector against it (shared by the quality test and bench/pii.ts).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { PII_ENTITIES, type PiiEntity, type Span } from "../../../../service/lib/pii";

export interface Snippet {
  id: number;
  kind: string;
  text: string;
  spans: Array<{ entity: PiiEntity; value: string }>;
}

export const CORPUS_PATH = join(__dirname, "../../../fixtures/pii/corpus.jsonl");

/** Written after the detector was built and never used to tune it: an honest generalisation check. */
export const HOLDOUT_PATH = join(__dirname, "../../../fixtures/pii/holdout.jsonl");

export function loadCorpus(path: string = CORPUS_PATH): Snippet[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Snippet);
}

export interface Score {
  tp: number;
  fp: number;
  fn: number;
  precision: number;
  recall: number;
}

export interface Miss {
  id: number;
  entity: PiiEntity;
  value: string;
  kind: "fp" | "fn";
}

/** Matches detected to expected spans by (entity, value), each expected span used once. */
export function score(
  corpus: Snippet[],
  detect: (text: string) => Span[],
): { table: Record<PiiEntity, Score>; misses: Miss[] } {
  const table = {} as Record<PiiEntity, Score>;
  for (const e of PII_ENTITIES) table[e] = { tp: 0, fp: 0, fn: 0, precision: 1, recall: 1 };
  const misses: Miss[] = [];
  for (const s of corpus) {
    const expected = s.spans.map((x) => ({ ...x, used: false }));
    for (const d of detect(s.text)) {
      const value = s.text.slice(d.start, d.end);
      const hit = expected.find((x) => !x.used && x.entity === d.entity && x.value === value);
      if (hit !== undefined) {
        hit.used = true;
        table[d.entity].tp++;
      } else {
        table[d.entity].fp++;
        misses.push({ id: s.id, entity: d.entity, value, kind: "fp" });
      }
    }
    for (const x of expected)
      if (!x.used) {
        table[x.entity].fn++;
        misses.push({ id: s.id, entity: x.entity, value: x.value, kind: "fn" });
      }
  }
  for (const e of PII_ENTITIES) {
    const r = table[e];
    r.precision = r.tp + r.fp === 0 ? 1 : r.tp / (r.tp + r.fp);
    r.recall = r.tp + r.fn === 0 ? 1 : r.tp / (r.tp + r.fn);
  }
  return { table, misses };
}

export function formatTable(title: string, table: Record<PiiEntity, Score>): string {
  const rows = [`${title}`, "entity           tp   fp   fn  precision  recall"];
  for (const e of PII_ENTITIES) {
    const r = table[e];
    rows.push(
      `${e.padEnd(16)} ${String(r.tp).padStart(3)}  ${String(r.fp).padStart(3)}  ${String(r.fn).padStart(3)}  ${r.precision.toFixed(3).padStart(9)}  ${r.recall.toFixed(3).padStart(6)}`,
    );
  }
  return rows.join("\n");
}
