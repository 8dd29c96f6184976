/**
 * Liveness, readiness and metrics. `/healthz` answers while the process can serve; `/readyz` is 503 when
 * PostgreSQL is unreachable or the process is draining (SIGTERM), so Kubernetes stops routing to it.
 */
import type Router from "@koa/router";
import type { AppDeps } from "../app";
import type { ProxyState } from "../state";

export function createHealthRoutes(router: Router<ProxyState>, deps: AppDeps): void {
  router.get("/healthz", async function healthz(ctx) {
    ctx.body = { status: "ok" };
  });

  router.get("/readyz", async function readyz(ctx) {
    if (deps.isDraining()) {
      ctx.status = 503;
      ctx.body = { status: "draining" };
      return;
    }
    const database = await deps.db.ping();
    ctx.status = database ? 200 : 503;
    ctx.body = {
      status: database ? "ready" : "not_ready",
      checks: { database: database ? "ok" : "unavailable" },
    };
  });

  router.get("/metrics", async function metrics(ctx) {
    const { contentType, body } = await deps.metricsText();
    ctx.type = contentType;
    ctx.body = body;
  });
}
