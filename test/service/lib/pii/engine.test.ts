import { describe, expect, it } from "vitest";
import { PRIORITY, createPiiEngine, resolveOverlaps } from "../../../../service/lib/pii/engine";
import { PII_ENTITIES, type Span } from "../../../../service/lib/pii/types";

/** The rule resolveOverlaps implements (the engine's priorities), written the obvious quadratic way. */
function reference(spans: Span[]): Span[] {
  const sorted = [...spans].sort(
    (a, b) => PRIORITY[a.entity] - PRIORITY[b.entity] || a.start - b.start || b.end - a.end,
  );
  const kept: Span[] = [];
  for (const s of sorted) if (!kept.some((k) => s.start < k.end && k.start < s.end)) kept.push(s);
  return kept.sort((a, b) => a.start - b.start);
}

describe("resolveOverlaps", () => {
  it("keeps what the priority rule keeps, on random overlapping spans of every entity", () => {
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const spans: Span[] = [];
      const count = 1 + random(40);
      for (let i = 0; i < count; i++) {
        const start = random(200);
        spans.push({ entity: PII_ENTITIES[random(PII_ENTITIES.length)], start, end: start + 1 + random(30) });
      }
      const expected = reference(spans.map((s) => ({ ...s })));
      expect(resolveOverlaps(spans.map((s) => ({ ...s }))), `round ${round}`).toEqual(expected);
    }
  });

  it("a prompt of 50,000 short e-mails: every one found, in order", () => {
    const engine = createPiiEngine({ enabled: true, names: "off" });
    const text = "a@b.co ".repeat(50_000);
    const spans = engine.detect(text);
    expect(spans).toHaveLength(50_000);
    expect(
      spans.every((s, i) => s.entity === "EMAIL_ADDRESS" && s.start === i * 7 && s.end === i * 7 + 6),
    ).toBe(true);
  });
});
