/**
 * GET /v1/models and GET /v1/models/:id: the configured client-facing model names (on the zero-config path, any
 * other name is routed to its provider unchanged, so `/v1/models/:id` answers it too). One shape serves both SDKs:
 * OpenAI's list (`object`, `data[].{id, object, created, owned_by}`) with Anthropic's fields added
 * (`data[].{type, display_name, created_at}`, `has_more`, `first_id`, `last_id`); each SDK ignores the other's.
 */
import type { Middleware } from "koa";
import type { AppDeps } from "../app";
import { NotFoundError } from "../errors";
import { modelAllowed } from "../stages/auth";
import type { ProxyState } from "../state";

export function createModelsRoute(deps: AppDeps): Middleware<ProxyState> {
  const created = Math.floor(Date.now() / 1000);
  const createdAt = new Date(created * 1000).toISOString();
  const item = (m: { name: string; provider: string }) => ({
    id: m.name,
    object: "model",
    created,
    owned_by: m.provider,
    type: "model",
    display_name: m.name,
    created_at: createdAt,
  });
  return async function models(ctx) {
    // A key sees the models it may use; one outside its list does not exist for it.
    const principal = ctx.state.principal;
    const all = deps.providers
      .models()
      .filter((m) => modelAllowed(principal, m.name))
      .map(item);
    const id = (ctx.params as { id?: string } | undefined)?.id;
    if (id !== undefined) {
      let found = all.find((m) => m.id === id);
      // The zero-config path sends every other name to its provider unchanged: one it may use exists for it.
      const passthrough = deps.config.passthroughProvider;
      if (!found && passthrough && modelAllowed(principal, id))
        found = item({ name: id, provider: passthrough });
      if (!found) throw new NotFoundError(`The model \`${id}\` does not exist.`, "model_not_found", "model");
      ctx.body = found;
      return;
    }
    ctx.body = {
      object: "list",
      data: all,
      has_more: false,
      first_id: all[0]?.id ?? null,
      last_id: all.at(-1)?.id ?? null,
    };
  };
}
