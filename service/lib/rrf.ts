/**
 * Reciprocal rank fusion: score(d) = Σ weight_i / (k + rank_i(d)), ranks from 1, summed over the rankings that
 * contain d. k = 60 as in the original paper (Cormack et al., 2009) and Relay.
 */

export const RRF_K = 60;

export interface FusedItem {
  id: string;
  score: number;
  /** 1-based rank in each input ranking, null where the item is absent. */
  ranks: (number | null)[];
}

/**
 * Fuse rankings (each a list of ids, best first). Ties are broken by the best single rank, then by id, so the
 * order is deterministic.
 */
export function reciprocalRankFusion(
  rankings: readonly (readonly string[])[],
  opts: { k?: number; weights?: readonly number[] } = {},
): FusedItem[] {
  const k = opts.k ?? RRF_K;
  const items = new Map<string, FusedItem>();
  rankings.forEach((ranking, r) => {
    const weight = opts.weights?.[r] ?? 1;
    ranking.forEach((id, i) => {
      let item = items.get(id);
      if (!item) {
        item = { id, score: 0, ranks: rankings.map(() => null) };
        items.set(id, item);
      }
      if (item.ranks[r] !== null) return; // a duplicate id in one ranking counts once, at its best rank
      item.ranks[r] = i + 1;
      item.score += weight / (k + i + 1);
    });
  });
  const bestRank = (item: FusedItem) => Math.min(...item.ranks.map((x) => x ?? Infinity));
  return [...items.values()].sort(
    (a, b) => b.score - a.score || bestRank(a) - bestRank(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}
