import { describe, expect, it } from "vitest";
import { uuidv7, uuidv7Time } from "../../../service/lib/uuid7";

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("uuidv7", () => {
  it("is an RFC 9562 version-7 UUID carrying the time it was made", () => {
    const before = Date.now();
    const id = uuidv7();
    const after = Date.now();
    expect(id).toMatch(V7);
    expect(uuidv7Time(id)).toBeGreaterThanOrEqual(before);
    expect(uuidv7Time(id)).toBeLessThanOrEqual(after);
    expect(uuidv7Time(uuidv7(Date.UTC(2030, 0, 1)))).toBe(Date.UTC(2030, 0, 1));
  });

  it("sorts by time as text (what keeps the usage table's primary key appending)", () => {
    const ids = [0, 1, 2, 1_000, 86_400_000].map((d) => uuidv7(1_800_000_000_000 + d));
    expect([...ids].sort()).toEqual(ids);
  });

  it("is unique across many ids made in the same millisecond, and its random bits are spread", () => {
    const ids = Array.from({ length: 20_000 }, () => uuidv7(1_800_000_000_000));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids.slice(0, 500)) expect(id).toMatch(V7);
    const variants = new Set(ids.map((id) => id[19]));
    expect([...variants].sort()).toEqual(["8", "9", "a", "b"]);
  });
});
