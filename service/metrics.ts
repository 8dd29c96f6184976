/**
 * Prometheus metrics. One registry per process; with node:cluster the primary aggregates every worker's registry
 * (prom-client's AggregatorRegistry), so `GET /metrics` on any worker shows one view of the whole pod.
 * Stages that own a metric define it in their own file against `registry`.
 */
import { Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { HotCounter, HotHistogram } from "./lib/hot-metrics";

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: "llmproxy_process_" });

export const requestsTotal = new HotCounter({
  name: "llmproxy_requests_total",
  help: "HTTP requests by route, status and requested model.",
  labelNames: ["route", "status", "model"] as const,
  registers: [registry],
});

export const requestDuration = new HotHistogram({
  name: "llmproxy_request_duration_seconds",
  help: "Request latency (to the last byte) by route.",
  labelNames: ["route"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});

export const upstreamDuration = new HotHistogram({
  name: "llmproxy_upstream_duration_seconds",
  help: "Upstream time to response headers (JSON: full body) by provider, model and outcome.",
  labelNames: ["provider", "model", "outcome"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [registry],
});

export const upstreamAttempts = new HotCounter({
  name: "llmproxy_upstream_attempts_total",
  help: "Upstream attempts by provider, model and outcome (ok, retry, fallback, error).",
  labelNames: ["provider", "model", "outcome"] as const,
  registers: [registry],
});

export const tokensTotal = new HotCounter({
  name: "llmproxy_tokens_total",
  help: "Tokens by direction (prompt, completion) and served model.",
  labelNames: ["direction", "model"] as const,
  registers: [registry],
});

export const costTotal = new HotCounter({
  name: "llmproxy_cost_usd_total",
  help: "Provider cost in USD at the configured prices, by served model (models without prices are not counted).",
  labelNames: ["model"] as const,
  registers: [registry],
});

export const usagePending = new Gauge({
  name: "llmproxy_usage_rows_pending",
  help: "Usage rows buffered and not yet written to PostgreSQL.",
  registers: [registry],
});
