/**
 * buildApp(deps): the Koa application. It never listens; main.ts (or a test) serves `app.callback()`.
 */
import Koa, { type Middleware } from "koa";
import compose from "koa-compose";
import Router from "@koa/router";
import type { Logger } from "pino";
import type { Config } from "./config";
import type {
  AuditLog,
  Database,
  KeyStore,
  RateLimiter,
  ResponseCache,
  TeamStore,
  UsageReport,
  UsageSink,
} from "./ports";
import type { ProviderRegistry } from "./providers/registry";
import type { SpendTracker } from "./adapters/spend";
import type { ProxyState } from "./state";
import type { PiiEngineLike } from "./stages/pii";
import type { KnowledgeBaseLike } from "./stages/rag";
import { chatPipeline, embeddingsPipeline } from "./pipeline";
import { createRequestContext } from "./stages/request-context";
import { createErrorHandler } from "./stages/errors";
import { createMasterAuth, createAuth } from "./stages/auth";
import { createHealthRoutes } from "./routes/health";
import { createModelsRoute } from "./routes/models";
import { createCountTokensRoute } from "./routes/count-tokens";
import { createAdminRouter } from "./routes/admin";
import { createKbRouter } from "./routes/kb";
import { NotFoundError } from "./errors";

export interface AppDeps {
  config: Config;
  log: Logger;
  db: Database;
  keys: KeyStore;
  teams: TeamStore;
  usageSink: UsageSink;
  usageReport: UsageReport;
  /** Admin changes: read by GET /internal/audit; key and team stores write their own events. */
  audit: AuditLog;
  providers: ProviderRegistry;
  /** Shared (Redis) or in-process limiter; null disables rate limiting. */
  rateLimiter: RateLimiter | null;
  /** Monthly spend per key and team, for budgets; absent: budgets are not enforced (tests of other stages). */
  spend?: SpendTracker | null;
  /** Response cache; null when the cache is off. */
  cache: ResponseCache | null;
  /** PII engine; null when PII scrubbing is off. */
  pii: PiiEngineLike | null;
  /** Knowledge base; null when RAG is off (no Chroma). */
  kb: KnowledgeBaseLike | null;
  /** True once SIGTERM was received: /readyz answers 503 and responses close their connection. */
  isDraining(): boolean;
  /** True once the shutdown grace period ran out and open requests are being cut (their rows say so). */
  isCutOff?(): boolean;
  /** Prometheus text for the whole pod (all workers). */
  metricsText(): Promise<{ contentType: string; body: string }>;
  /** Called by the admin API when a key is revoked or rotated, so the auth cache forgets it at once. */
  onKeyRevoked?(keyId: string): void;
  /** Called by the admin API when a team's limits or models change, so its keys' cached lookups are dropped. */
  onTeamChanged?(teamId: string): void;
}

export function buildApp(deps: AppDeps): Koa<ProxyState> {
  const app = new Koa<ProxyState>();
  // X-Forwarded-For is the client's to write: only the entries the configured proxies appended are believed.
  const hops = deps.config.server.trustedProxyHops ?? 0;
  app.proxy = hops > 0;
  app.maxIpsCount = hops;
  // Errors are logged once by the error handler with the request's logger; keep Koa's default printer quiet.
  app.silent = true;

  app.use(
    createRequestContext({
      log: deps.log,
      usageSink: deps.usageSink,
      isDraining: deps.isDraining,
      ...(deps.isCutOff ? { isCutOff: deps.isCutOff } : {}),
      spend: deps.spend ?? null,
      isConfiguredModel: (
        (names) => (name: string) =>
          names.has(name)
      )(new Set(deps.config.models.map((m) => m.name))),
    }),
  );
  app.use(createErrorHandler());

  const router = new Router<ProxyState>();
  createHealthRoutes(router, deps);

  const models = createModelsRoute(deps);
  router.get("/v1/models", createAuth({ keys: deps.keys, scope: "models" }), models);
  router.get("/v1/models/*id", createAuth({ keys: deps.keys, scope: "models" }), models);
  const api: Array<[string, Middleware<ProxyState>[]]> = [
    ["/v1/chat/completions", chatPipeline(deps)],
    ["/v1/messages", chatPipeline(deps, "messages")],
    ["/v1/responses", chatPipeline(deps, "responses")],
    [
      "/v1/messages/count_tokens",
      [createAuth({ keys: deps.keys, scope: "chat" }), createCountTokensRoute(deps)],
    ],
    ["/v1/embeddings", embeddingsPipeline(deps)],
  ];
  for (const [path, stages] of api) router.post(path, ...stages);

  // Admin routes apply master auth per route; knowledge-base routes accept the master key or a `kb:write` key.
  const masterAuth = createMasterAuth({ masterKey: deps.config.masterKey });
  const admin = createAdminRouter(deps, masterAuth);
  const kb = createKbRouter(deps, masterAuth);

  // The proxied routes by exact path, ahead of the router: for every request @koa/router tests each route, then
  // concatenates and composes the matched stacks, a measurable share of a proxied request's CPU. Any other spelling
  // (a trailing slash, another case) still reaches the same stages through the router.
  const byPath = new Map(api.map(([path, stages]) => [path, compose(stages)]));
  app.use(function apiRoutes(ctx, next) {
    const route = ctx.method === "POST" ? byPath.get(ctx.path) : undefined;
    return route ? route(ctx, next) : next();
  });
  app.use(router.routes());
  app.use(admin.routes());
  app.use(kb.routes());
  app.use(async function notFound(ctx) {
    if (ctx.status === 404 && ctx.body === undefined) {
      throw new NotFoundError(`Unknown endpoint ${ctx.method} ${ctx.path}.`, "unknown_url");
    }
  });
  return app;
}
