/**
 * Liveness, readiness and metrics. `/healthz` answers while the process can serve; `/readyz` is 503 when
 * PostgreSQL is unreachable, when Redis is and the limits are fail-closed, or the process is draining (SIGTERM). `/readyz?dependencies=0` leaves the database
 * out: the Kubernetes readiness probe uses it, because every pod shares the one database, and a failover that took
 * them all out of the Service would stop the API while they could still serve (keys verified before, usage rows
 * kept for later) — readiness is about this pod.
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
    if (ctx.query.dependencies === "0") {
      ctx.body = { status: "ready", checks: { database: "not checked" } };
      return;
    }
    const database = await deps.db.ping();
    // Redis: reported; not ready only when fail-closed, where every rate-limited request would be a 503 meanwhile.
    const redis = deps.rateLimiter?.redisHealth?.() ?? null;
    const ready = database && !(redis && !redis.available && redis.failClosed);
    ctx.status = ready ? 200 : 503;
    ctx.body = {
      status: ready ? "ready" : "not_ready",
      checks: {
        database: database ? "ok" : "unavailable",
        ...(redis ? { redis: redis.available ? "ok" : "unavailable" } : {}),
      },
    };
  });

  router.get("/metrics", async function metrics(ctx) {
    const { contentType, body } = await deps.metricsText();
    ctx.type = contentType;
    ctx.body = body;
  });
}
