// Scores the detectors against the labelled corpus (test/fixtures/pii/corpus.jsonl) and prints the table.
import { describe, expect, it } from "vitest";
import { createPiiEngine, PATTERN_ENTITIES, PII_ENTITIES } from "../../../../service/lib/pii";
import { formatTable, HOLDOUT_PATH, loadCorpus, score } from "./corpus";

const corpus = loadCorpus();

describe("PII quality corpus", () => {
  it("has at least 300 snippets covering every entity, in every format, with hard negatives", () => {
    expect(corpus.length).toBeGreaterThanOrEqual(300);
    for (const e of PII_ENTITIES)
      expect(
        corpus.some((s) => s.spans.some((x) => x.entity === e)),
        e,
      ).toBe(true);
    for (const k of ["prose", "chat", "code", "log", "json", "csv"])
      expect(
        corpus.some((s) => s.kind === k),
        k,
      ).toBe(true);
    expect(corpus.filter((s) => s.spans.length === 0).length).toBeGreaterThanOrEqual(60);
    for (const s of corpus)
      for (const x of s.spans) expect(s.text.includes(x.value), `${s.id} ${x.value}`).toBe(true);
  });

  it("default (gazetteer) meets the precision/recall targets", () => {
    const engine = createPiiEngine({ enabled: true, names: "gazetteer" });
    const { table, misses } = score(corpus, engine.detect);
    console.log(formatTable("names: gazetteer (default)", table));
    console.log(misses.map((m) => `  ${m.kind} #${m.id} ${m.entity} ${JSON.stringify(m.value)}`).join("\n"));
    for (const e of PATTERN_ENTITIES) {
      expect(table[e].recall, `${e} recall`).toBeGreaterThanOrEqual(0.98);
      expect(table[e].precision, `${e} precision`).toBeGreaterThanOrEqual(0.97);
    }
    expect(table.PERSON.recall).toBeGreaterThanOrEqual(0.85);
    expect(table.PERSON.precision).toBeGreaterThanOrEqual(0.85);
    expect(table.LOCATION.recall).toBeGreaterThanOrEqual(0.7);
  });

  it("compromise mode is measured on the same corpus (printed for the default choice)", () => {
    const engine = createPiiEngine({ enabled: true, names: "compromise" });
    const { table } = score(corpus, engine.detect);
    console.log(formatTable("names: compromise", table));
    // Same pattern detectors; names come from compromise and must at least find most people.
    for (const e of PATTERN_ENTITIES) expect(table[e].recall, e).toBeGreaterThanOrEqual(0.98);
    expect(table.PERSON.tp).toBeGreaterThan(table.PERSON.fn);
  });

  it("prints both detectors' scores on the held-out set (written after the detector; not gated)", () => {
    const holdout = loadCorpus(HOLDOUT_PATH);
    expect(holdout.length).toBeGreaterThanOrEqual(50);
    for (const names of ["gazetteer", "compromise"] as const) {
      const { table } = score(holdout, createPiiEngine({ enabled: true, names }).detect);
      console.log(formatTable(`held-out, names: ${names}`, table));
      expect(table.EMAIL_ADDRESS.recall).toBe(1);
    }
  });
});
