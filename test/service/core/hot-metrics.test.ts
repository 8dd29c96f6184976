import { AggregatorRegistry, Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { HotCounter, HotHistogram } from "../../../service/lib/hot-metrics";

/** The same updates on prom-client's own metric and on ours, each in a registry of its own. */
function pair() {
  const prom = new Registry();
  const hot = new Registry();
  const labelNames = ["route", "model"] as const;
  const buckets = [0.01, 0.1, 1];
  return {
    prom,
    hot,
    counters: [
      new Counter({ name: "x_requests_total", help: "h", labelNames, registers: [prom] }),
      new HotCounter({ name: "x_requests_total", help: "h", labelNames, registers: [hot] }),
    ] as const,
    histograms: [
      new Histogram({ name: "x_seconds", help: "h", labelNames, buckets, registers: [prom] }),
      new HotHistogram({ name: "x_seconds", help: "h", labelNames, buckets, registers: [hot] }),
    ] as const,
  };
}

function feed(p: ReturnType<typeof pair>, seed: number) {
  const values = [0.005, 0.01, 0.0100001, 0.5, 1, 3, 0.2 * seed];
  for (const [i, v] of values.entries()) {
    const labels = { route: i % 2 ? "chat" : "embeddings", model: `m${(i + seed) % 3}` };
    for (const c of p.counters) c.inc(labels, i + 1);
    for (const h of p.histograms) h.observe(labels, v);
  }
}

describe("hot-path metrics", () => {
  it("expose exactly what prom-client's Counter and Histogram expose for the same updates", async () => {
    const p = pair();
    feed(p, 1);
    expect(await p.hot.metrics()).toBe(await p.prom.metrics());
    expect(await p.hot.getMetricsAsJSON()).toEqual(await p.prom.getMetricsAsJSON());
  });

  it("aggregate across workers like prom-client's metrics (the cluster primary's view)", async () => {
    const workers = [pair(), pair()];
    workers.forEach((w, i) => feed(w, i + 1));
    const prom = AggregatorRegistry.aggregate(
      await Promise.all(workers.map((w) => w.prom.getMetricsAsJSON())),
    );
    const hot = AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.hot.getMetricsAsJSON())));
    expect(await hot.metrics()).toBe(await prom.metrics());
  });

  it("ignore amounts prom-client would throw on, and reset", async () => {
    const p = pair();
    const [, counter] = p.counters;
    const [, histogram] = p.histograms;
    counter.inc({ route: "chat", model: "m" }, -1);
    counter.inc({ route: "chat", model: "m" }, Number.NaN);
    histogram.observe({ route: "chat", model: "m" }, Number.POSITIVE_INFINITY);
    expect((await counter.get()).values).toEqual([]);
    expect((await histogram.get()).values).toEqual([]);
    counter.inc({ route: "chat", model: "m" });
    expect((await counter.get()).values).toEqual([{ labels: { route: "chat", model: "m" }, value: 1 }]);
    p.hot.resetMetrics();
    expect((await counter.get()).values).toEqual([]);
  });
});
