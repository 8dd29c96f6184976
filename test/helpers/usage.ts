/** A usage row for tests that write rows directly (the writer, the stores, the usage report); override any field. */
import crypto from "node:crypto";
import type { UsageRow } from "../../service/ports";

export function usageRow(over: Partial<UsageRow> = {}): UsageRow {
  return {
    requestId: crypto.randomUUID(),
    createdAt: new Date(),
    keyId: null,
    teamId: null,
    route: "chat",
    requestedModel: "m",
    servedModel: "m",
    provider: "mock",
    promptTokens: 11,
    completionTokens: 7,
    cachedTokens: 0,
    cacheWriteTokens: 0,
    costUsd: null,
    latencyMs: 3,
    status: 200,
    errorCode: null,
    stream: false,
    cacheHit: false,
    piiCounts: null,
    ...over,
  };
}
