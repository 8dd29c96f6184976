import { describe, expect, it } from "vitest";
import { bm25Scores, tokenize } from "../../../service/lib/bm25";
import { reciprocalRankFusion, RRF_K } from "../../../service/lib/rrf";

describe("tokenize", () => {
  it("lower-cases, keeps identifiers whole, drops stop words and 1-character terms", () => {
    expect(tokenize("How do I set MAX_RETRIES for the v2 API? a b")).toEqual([
      "set",
      "max_retries",
      "v2",
      "api",
    ]);
  });
});

describe("bm25Scores", () => {
  const docs = [
    "The cache stores responses in Redis with a TTL.",
    "Error E1234 means the upstream timed out; raise timeout_ms.",
    "Rate limits use a Lua script in Redis for atomic admission.",
    "Nothing relevant here at all, just filler words about gardening.",
  ];

  it("ranks the document containing a rare exact term first and scores non-matching documents 0", () => {
    const scores = bm25Scores("what does E1234 mean", docs);
    expect(scores[1]).toBeGreaterThan(0);
    expect(scores[0]).toBe(0);
    expect(scores[3]).toBe(0);
    expect(Math.max(...scores)).toBe(scores[1]);
  });

  it("weights rare terms above common ones (idf)", () => {
    // "redis" is in two documents, "lua" in one: the Lua document wins.
    const scores = bm25Scores("redis lua", docs);
    expect(scores[2]).toBeGreaterThan(scores[0]);
    expect(scores[0]).toBeGreaterThan(0);
  });

  it("saturates term frequency and normalises by length", () => {
    const short = "retry policy";
    const long = `retry policy ${"unrelated filler text ".repeat(30)}`;
    const [s, l] = bm25Scores("retry", [short, long, "other"]);
    expect(s).toBeGreaterThan(l);
    const [once, many] = bm25Scores("retry", [
      "retry alpha beta",
      "retry retry retry retry retry retry",
      "x y z",
    ]);
    expect(many).toBeGreaterThan(once);
    expect(many).toBeLessThan(once * 3);
  });

  it("returns zeros for an empty query or only stop words", () => {
    expect(bm25Scores("the and of", docs)).toEqual([0, 0, 0, 0]);
    expect(bm25Scores("redis", [])).toEqual([]);
  });
});

describe("reciprocalRankFusion", () => {
  it("sums 1/(k + rank) over rankings with k = 60", () => {
    const fused = reciprocalRankFusion([
      ["a", "b", "c"],
      ["c", "a"],
    ]);
    const score = (id: string) => fused.find((f) => f.id === id)!.score;
    expect(RRF_K).toBe(60);
    expect(score("a")).toBeCloseTo(1 / 61 + 1 / 62, 12);
    expect(score("b")).toBeCloseTo(1 / 62, 12);
    expect(score("c")).toBeCloseTo(1 / 63 + 1 / 61, 12);
    expect(fused.map((f) => f.id)).toEqual(["a", "c", "b"]);
    expect(fused.find((f) => f.id === "b")!.ranks).toEqual([2, null]);
  });

  it("an item ranked in both lists beats one ranked first in only one", () => {
    const fused = reciprocalRankFusion([
      ["x", "both"],
      ["y", "both"],
    ]);
    expect(fused[0].id).toBe("both");
  });

  it("breaks ties deterministically (best rank, then id) and honours weights", () => {
    const fused = reciprocalRankFusion([
      ["b", "a"],
      ["a", "b"],
    ]);
    expect(fused.map((f) => f.id)).toEqual(["a", "b"]);
    const weighted = reciprocalRankFusion(
      [
        ["b", "a"],
        ["a", "b"],
      ],
      { weights: [2, 1] },
    );
    expect(weighted[0].id).toBe("b");
  });
});
