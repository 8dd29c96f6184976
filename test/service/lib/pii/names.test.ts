import { describe, expect, it } from "vitest";
import { createPiiEngine } from "../../../../service/lib/pii";

const engine = createPiiEngine({ enabled: true, names: "gazetteer" });

function found(text: string): string[] {
  return engine
    .detect(text)
    .map(
      (s) =>
        `${s.entity === "PERSON" ? "P" : s.entity === "LOCATION" ? "L" : s.entity}:${text.slice(s.start, s.end)}`,
    );
}

describe("gazetteer PERSON", () => {
  it("finds First Last pairs and extends over particles and initials", () => {
    expect(found("Report by Hannah Schmidt today")).toEqual(["P:Hannah Schmidt"]);
    expect(found("Signed: Jan de Vries")).toContain("P:Jan de Vries");
    expect(found("Thanks to John F. Kennedy")).toContain("P:John F. Kennedy");
  });
  it("uses titles without including them", () => {
    expect(found("Dear Mrs. Alvarez,")).toEqual(["P:Alvarez"]);
    expect(found("Professor Helen Cartwright teaches")).toEqual(["P:Helen Cartwright"]);
  });
  it("uses greetings, sign-offs and 'my name is'", () => {
    expect(found("Hi Svetlana, the contract arrived.")).toEqual(["P:Svetlana"]);
    expect(found("Regards,\nYasmin Haddad")).toEqual(["P:Yasmin Haddad"]);
    expect(found("my name is alex morgan and")).toEqual(["P:alex morgan"]);
  });
  it("needs a cue for first names that are also words", () => {
    expect(found("Mark the ticket as resolved.")).toEqual([]);
    expect(found("Will this migration lock the table?")).toEqual([]);
    expect(found("Grace periods are 14 days.")).toEqual([]);
    expect(found("ask Jordan about it")).toEqual(["P:Jordan"]);
    expect(found("Grace said no.")).toEqual(["P:Grace"]);
    expect(found("Will Turner approved it.")).toEqual(["P:Will Turner"]);
  });
  it("does not take UI labels, products or month names for people", () => {
    expect(found("Open Settings and toggle Dark Mode before you restart the Gateway.")).toEqual([]);
    expect(found("Apple announced a new iPhone.")).toEqual([]);
    expect(found("The meeting moved from Monday to Wednesday in May.")).toEqual([]);
  });
});

describe("gazetteer LOCATION", () => {
  it("finds countries, states, big cities and multi-word names on their own", () => {
    expect(found("Offices: Germany, Texas, Osaka, Buenos Aires")).toEqual([
      "L:Germany",
      "L:Texas",
      "L:Osaka",
      "L:Buenos Aires",
    ]);
  });
  it("takes ambiguous places only with context", () => {
    expect(found("I ate an apple while Jordan drove us to Amman, Jordan.")).toEqual([
      "P:Jordan",
      "L:Amman",
      "L:Jordan",
    ]);
    expect(found("Turkey, stuffing and cranberry sauce")).toEqual([]);
    expect(found("we flew to Turkey")).toEqual(["L:Turkey"]);
  });
  it("finds lower-case places after a preposition and street addresses", () => {
    expect(found("moved from cork to dublin")).toEqual(["L:cork", "L:dublin"]);
    expect(found("Ship to 221B Baker Street, London.")).toEqual(["L:221B Baker Street", "L:London"]);
  });
  it("tells a person named after a place from the place", () => {
    expect(found("Paris Hilton was spotted in Paris")).toEqual(["P:Paris Hilton", "L:Paris"]);
  });
});
