import { describe, expect, it } from "vitest";
import {
  CANONICAL_PLACEHOLDER_RE,
  canonicalMaps,
  createPiiEngine,
  PLACEHOLDER_RE,
  type PiiOptions,
} from "../../../../service/lib/pii";

const base: PiiOptions = { enabled: true, names: "off" };
const TEXT =
  "Mail ana@example.com or call +1 415 555 0132; key sk-qHuTxnnoDC6ajzumsJ9D7PpyGZO6gqr2DHqpIckQtK1N62Xe.";

function placeholders(s: string): string[] {
  return s.match(new RegExp(PLACEHOLDER_RE.source, "g")) ?? [];
}

describe("scrub and restore", () => {
  it("replaces values with typed 32-hex placeholders and restores them", () => {
    const session = createPiiEngine(base).newSession();
    const scrubbed = session.scrub(TEXT);
    expect(scrubbed).not.toContain("ana@example.com");
    expect(scrubbed).not.toContain("415 555 0132");
    expect(scrubbed).toMatch(
      /^Mail <<PII_EMAIL_ADDRESS_[0-9a-f]{32}>> or call <<PII_PHONE_NUMBER_[0-9a-f]{32}>>; key /,
    );
    // Secrets are replaced irreversibly and never come back.
    expect(scrubbed).toContain("key <<REDACTED_INTERNAL_SECRET>>.");
    expect(session.restore(scrubbed)).toBe(TEXT.replace(/sk-\w+/, "<<REDACTED_INTERNAL_SECRET>>"));
  });

  it("gives the same value the same placeholder within a session, across calls", () => {
    const session = createPiiEngine(base).newSession();
    const a = session.scrub("from ana@example.com");
    const b = session.scrub("reply to ana@example.com and bo@example.com");
    const [pa] = placeholders(a);
    const pb = placeholders(b);
    expect(pb[0]).toBe(pa);
    expect(pb[1]).not.toBe(pa);
  });

  it("uses different random placeholders in different sessions", () => {
    const engine = createPiiEngine(base);
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) seen.add(placeholders(engine.newSession().scrub("ana@example.com"))[0]!);
    expect(seen.size).toBe(50);
  });

  it("never repeats random bits, across refills of the entropy pool", () => {
    // 256 placeholders use one 4 KiB block of random bytes; 2 000 cross several refills.
    const session = createPiiEngine(base).newSession();
    const text = Array.from({ length: 2000 }, (_, i) => `u${i}@example.com`).join(" ");
    const found = placeholders(session.scrub(text));
    expect(found).toHaveLength(2000);
    const hex = found.map((p) => /_([0-9a-f]{32})>>$/.exec(p)![1]);
    expect(new Set(hex).size).toBe(2000);
    // Not a counter or a pattern: every hex digit turns up in every position.
    for (let pos = 0; pos < 32; pos++) expect(new Set(hex.map((h) => h[pos])).size).toBe(16);
  });

  it("leaves unknown and foreign placeholders as they are", () => {
    const engine = createPiiEngine(base);
    const s1 = engine.newSession();
    const s2 = engine.newSession();
    const ph = placeholders(s1.scrub("ana@example.com"))[0]!;
    expect(s2.restore(`x ${ph} y`)).toBe(`x ${ph} y`);
    const fake = "<<PII_EMAIL_ADDRESS_00000000000000000000000000000000>>";
    expect(s1.restore(fake)).toBe(fake);
  });

  it("restores JSON-escaped when asked (tool-call arguments)", () => {
    const session = createPiiEngine({ ...base, names: "gazetteer" }).newSession();
    const ph = placeholders(session.scrub('Contact "Liam O\'Connor" at liam@example.com'))[0]!;
    expect(session.restore(`{"to":"${ph}"}`, { json: true })).toBe('{"to":"Liam O\'Connor"}');
  });

  it("counts occurrences per entity, never values", () => {
    const session = createPiiEngine(base).newSession();
    session.scrub("ana@example.com, ana@example.com, 203.0.113.9");
    session.redact("SSN 512-34-8890");
    const c = session.counts();
    expect(c.EMAIL_ADDRESS).toBe(2);
    expect(c.IP_ADDRESS).toBe(1);
    expect(c.US_SSN).toBe(1);
    expect(c.PERSON).toBe(0);
    expect(JSON.stringify(c)).not.toContain("example");
  });
});

describe("redact", () => {
  it("replaces every entity with an irreversible typed marker", () => {
    const session = createPiiEngine(base).newSession();
    const out = session.redact(TEXT);
    expect(out).toBe(
      "Mail <<REDACTED_EMAIL_ADDRESS>> or call <<REDACTED_PHONE_NUMBER>>; key <<REDACTED_INTERNAL_SECRET>>.",
    );
    expect(session.restore(out)).toBe(out);
  });
});

describe("options", () => {
  it("global off switch makes sessions pass-through", () => {
    const engine = createPiiEngine({ ...base, enabled: false });
    expect(engine.detect(TEXT)).toEqual([]);
    const s = engine.newSession();
    expect(s.scrub(TEXT)).toBe(TEXT);
    expect(s.redact(TEXT)).toBe(TEXT);
  });

  it("per-entity switches turn single entities off", () => {
    const engine = createPiiEngine({ ...base, entities: { EMAIL_ADDRESS: false, INTERNAL_SECRET: false } });
    const out = engine.newSession().scrub(TEXT);
    expect(out).toContain("ana@example.com");
    expect(out).toContain("sk-qHuT");
    expect(out).not.toContain("415 555 0132");
  });

  it("allow list matches whole values case-insensitively", () => {
    const engine = createPiiEngine({ ...base, allowList: ["ANA@Example.com", "support"] });
    const out = engine
      .newSession()
      .scrub("ana@example.com and ana@example.community and support@example.com");
    expect(out).toMatch(/^ana@example\.com and <<PII_EMAIL_ADDRESS_[0-9a-f]{32}>> and <<PII_EMAIL_ADDRESS_/);
  });

  it("names: off disables PERSON and LOCATION", () => {
    const engine = createPiiEngine({ enabled: true, names: "off" });
    expect(engine.detect("Maria Gonzalez lives in Berlin")).toEqual([]);
    const on = createPiiEngine({ enabled: true, names: "gazetteer" });
    expect(on.detect("Maria Gonzalez lives in Berlin").map((s) => s.entity)).toEqual(["PERSON", "LOCATION"]);
  });
});

describe("overlaps", () => {
  it("prefers a validated pattern over a name and never returns overlapping spans", () => {
    const engine = createPiiEngine({ enabled: true, names: "gazetteer" });
    const text = "Maria Gonzalez <maria.gonzalez@example.com> Berlin";
    const spans = engine.detect(text);
    for (let i = 1; i < spans.length; i++) expect(spans[i]!.start).toBeGreaterThanOrEqual(spans[i - 1]!.end);
    expect(spans.map((s) => text.slice(s.start, s.end))).toEqual([
      "Maria Gonzalez",
      "maria.gonzalez@example.com",
      "Berlin",
    ]);
  });
});

describe("canonical placeholders (response cache)", () => {
  it("numbers a session's placeholders in issue order, keeping entity and shape, and maps back", () => {
    const session = createPiiEngine(base).newSession();
    const scrubbed = session.scrub("ana@example.com, then +1 415 555 0132, then ana@example.com");
    const issued = session.placeholders();
    expect(issued).toEqual(placeholders(scrubbed).filter((p, i, all) => all.indexOf(p) === i));
    const { toCanonical, fromCanonical } = canonicalMaps(issued);
    const canonical = toCanonical.restore(scrubbed);
    expect(canonical).toBe(
      "<<PII_EMAIL_ADDRESS_00000000000000000000000000000001>>, then " +
        "<<PII_PHONE_NUMBER_00000000000000000000000000000002>>, then " +
        "<<PII_EMAIL_ADDRESS_00000000000000000000000000000001>>",
    );
    expect(placeholders(canonical)).toHaveLength(3);
    expect(fromCanonical.restore(canonical)).toBe(scrubbed);
    expect(CANONICAL_PLACEHOLDER_RE.test(canonical)).toBe(true);
    expect(CANONICAL_PLACEHOLDER_RE.test(scrubbed)).toBe(false);
    // Another request with the same values: different random placeholders, the same canonical text, and a cached
    // canonical answer comes back to this session's placeholders, which it restores to its values.
    const other = createPiiEngine(base).newSession();
    const scrubbed2 = other.scrub("ana@example.com, then +1 415 555 0132, then ana@example.com");
    expect(scrubbed2).not.toBe(scrubbed);
    const maps2 = canonicalMaps(other.placeholders());
    expect(maps2.toCanonical.restore(scrubbed2)).toBe(canonical);
    expect(other.restore(maps2.fromCanonical.restore(canonical))).toBe(
      "ana@example.com, then +1 415 555 0132, then ana@example.com",
    );
  });

  it("a canonical placeholder split across stream pieces is mapped whole", () => {
    const session = createPiiEngine(base).newSession();
    const scrubbed = session.scrub("write to ana@example.com today");
    const { toCanonical } = canonicalMaps(session.placeholders());
    for (let i = 0; i <= scrubbed.length; i++) {
      const r = toCanonical.createStreamRestorer();
      const out = r.push(scrubbed.slice(0, i)) + r.push(scrubbed.slice(i)) + r.flush();
      expect(out, `split at ${i}`).toBe(
        "write to <<PII_EMAIL_ADDRESS_00000000000000000000000000000001>> today",
      );
    }
  });
});
