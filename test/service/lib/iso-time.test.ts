import { describe, expect, it } from "vitest";
import { isoUtc } from "../../../service/lib/iso-time";

describe("isoUtc", () => {
  it("formats exactly like Date#toISOString across days, leap days, years and the epoch", () => {
    const samples = [
      0,
      1,
      999,
      1000,
      86_399_999,
      86_400_000,
      -1,
      -86_400_001,
      Date.UTC(2024, 1, 29, 23, 59, 59, 999),
      Date.UTC(2024, 2, 1),
      Date.UTC(1999, 11, 31, 23, 59, 59, 999),
      Date.UTC(2000, 0, 1),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
      Date.UTC(10000, 0, 1), // six-digit year: toISOString's own format
      Date.UTC(-1, 0, 1),
    ];
    // And a random walk, back and forth across day boundaries.
    let ms = Date.UTC(2026, 10, 24, 22, 0, 0);
    for (let i = 0; i < 20_000; i++) {
      ms += Math.floor((Math.random() - 0.3) * 30_000_000);
      samples.push(ms);
    }
    for (const t of samples) expect(isoUtc(t), String(t)).toBe(new Date(t).toISOString());
  });
});
