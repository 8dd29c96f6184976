/**
 * GET /v1/models: the configured client-facing model names in OpenAI's list shape.
 */
import type { Middleware } from "koa";
import type { AppDeps } from "../app";
import type { ProxyState } from "../state";

export function createModelsRoute(deps: AppDeps): Middleware<ProxyState> {
  const created = Math.floor(Date.now() / 1000);
  return async function models(ctx) {
    ctx.body = {
      object: "list",
      data: deps.providers.models().map((m) => ({
        id: m.name,
        object: "model",
        created,
        owned_by: m.provider,
      })),
    };
  };
}
