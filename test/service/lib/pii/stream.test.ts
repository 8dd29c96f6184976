import { describe, expect, it } from "vitest";
import { createPiiEngine, type PiiSession } from "../../../../service/lib/pii";

const engine = createPiiEngine({ enabled: true, names: "off" });

function setup(values: string[]): { session: PiiSession; scrubbed: string; original: string } {
  const session = engine.newSession();
  const original = `Dear customer, ${values.join(" and ")} are on file. Bye.`;
  return { session, scrubbed: session.scrub(original), original };
}

function runStream(session: PiiSession, pieces: string[]): { out: string; emitted: string[] } {
  const r = session.createStreamRestorer();
  const emitted = pieces.map((p) => r.push(p));
  emitted.push(r.flush());
  return { out: emitted.join(""), emitted };
}

describe("stream restorer", () => {
  it("restores a placeholder split at every possible position into two chunks", () => {
    const { session, scrubbed, original } = setup(["ana@example.com"]);
    for (let i = 0; i <= scrubbed.length; i++) {
      const { out } = runStream(session, [scrubbed.slice(0, i), scrubbed.slice(i)]);
      expect(out, `split at ${i}`).toBe(original);
    }
  });

  it("restores with every pair of split positions (three chunks) and with one-character chunks", () => {
    const { session, scrubbed, original } = setup(["ana@example.com", "203.0.113.9"]);
    for (let i = 0; i <= scrubbed.length; i += 3)
      for (let j = i; j <= scrubbed.length; j += 2)
        expect(runStream(session, [scrubbed.slice(0, i), scrubbed.slice(i, j), scrubbed.slice(j)]).out).toBe(
          original,
        );
    expect(runStream(session, [...scrubbed]).out).toBe(original);
  });

  it("restores several and adjacent placeholders", () => {
    const session = engine.newSession();
    const original = "ana@example.com203.0.113.9 ana@example.com";
    const scrubbed = session.scrub("ana@example.com 203.0.113.9 ana@example.com").replace(" ", "");
    expect(runStream(session, [...scrubbed]).out).toBe(original);
  });

  it("holds at most a placeholder's length minus one, and releases it when the text diverges", () => {
    const { session, scrubbed } = setup(["ana@example.com"]);
    const ph = scrubbed.match(/<<PII_[A-Z_]+_[0-9a-f]{32}>>/)![0];
    const r = session.createStreamRestorer();
    let pushed = 0;
    let emitted = 0;
    let maxHeld = 0;
    for (const ch of scrubbed.slice(0, scrubbed.indexOf(ph) + ph.length - 1)) {
      pushed += ch.length;
      emitted += r.push(ch).length;
      maxHeld = Math.max(maxHeld, pushed - emitted);
    }
    expect(maxHeld).toBe(ph.length - 1);
    expect(r.push("X")).toBe(ph.slice(0, -1) + "X");
    expect(r.flush()).toBe("");
  });

  it("adds no delay when nothing can be a placeholder prefix", () => {
    const { session } = setup(["ana@example.com"]);
    const r2 = session.createStreamRestorer();
    expect(r2.push("plain text")).toBe("plain text");
    expect(r2.push(" a < b")).toBe(" a < b");
    // "<<PII_EMAIL_ADDRESS_" followed by hex that matches no issued placeholder is released at once.
    expect(r2.push("<<PII_EMAIL_ADDRESS_zz")).toBe("<<PII_EMAIL_ADDRESS_zz");
    expect(r2.push("<<PII_PHONE_NUMBER_")).toBe("<<PII_PHONE_NUMBER_");
    // A real prefix is held only until the text diverges.
    expect(r2.push("<<PI")).toBe("");
    expect(r2.push("E>>")).toBe("<<PIE>>");
    expect(r2.flush()).toBe("");
  });

  it("passes text straight through when the session issued no placeholders", () => {
    const session = engine.newSession();
    const r = session.createStreamRestorer();
    expect(r.push("<<PII_")).toBe("<<PII_");
    expect(r.flush()).toBe("");
  });

  it("restores JSON-escaped values in argument streams", () => {
    const session = createPiiEngine({ enabled: true, names: "gazetteer" }).newSession();
    const scrubbed = session.scrub('Write to "Liam O\'Connor"');
    const ph = scrubbed.match(/<<PII_[A-Z_]+_[0-9a-f]{32}>>/)![0];
    const args = `{"name":"${ph}"}`;
    for (let i = 0; i <= args.length; i++) {
      const r = session.createStreamRestorer({ json: true });
      const out = r.push(args.slice(0, i)) + r.push(args.slice(i)) + r.flush();
      expect(JSON.parse(out)).toEqual({ name: "Liam O'Connor" });
    }
  });
});
