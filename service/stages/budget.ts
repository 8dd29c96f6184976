/**
 * Monthly spend budgets: a key whose own budget, or whose team's, is spent this UTC month is refused with 429
 * `insufficient_quota` (code `budget_exceeded`) before anything is sent upstream; the refusal gets a usage row like
 * every other. Budgets are USD at the configured prices (`pricing` on the deployment): requests served without a
 * price cost nothing against them. 0 = blocked; null = no budget, and then nothing is looked up.
 * How spend is known, and how far a fleet may overshoot, is in adapters/spend.ts.
 */
import type { Middleware } from "koa";
import { Counter } from "prom-client";
import { BudgetExceededError } from "../errors";
import type { SpendScope, SpendTracker } from "../adapters/spend";
import { registry } from "../metrics";
import type { ProxyState } from "../state";

export const budgetRejections = new Counter({
  name: "llmproxy_budget_rejections_total",
  help: "Requests refused because a monthly spend budget is spent (or 0), by scope (key, team).",
  labelNames: ["scope"] as const,
  registers: [registry],
});

const usd = (n: number) => `USD ${n.toFixed(2)}`;

function nextMonth(now: Date): string {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString().slice(0, 10);
}

export function createBudget(deps: { spend: SpendTracker }): Middleware<ProxyState> {
  async function check(scope: SpendScope, id: string, budget: number): Promise<void> {
    const spent = budget === 0 ? 0 : await deps.spend.spent(scope, id);
    if (spent < budget) return;
    budgetRejections.inc({ scope });
    const whose = scope === "key" ? "This API key's" : "This API key's team's";
    throw new BudgetExceededError(
      budget === 0
        ? `${whose} monthly budget is 0: it may not spend anything.`
        : `${whose} monthly budget of ${usd(budget)} is spent (${usd(spent)} this month); it renews on ${nextMonth(new Date())} (UTC).`,
      scope,
    );
  }
  return async function budget(ctx, next) {
    const p = ctx.state.principal;
    if (p?.kind !== "key") return next();
    const keyBudget = p.key.budgetUsdPerMonth;
    const teamBudget = p.key.teamId ? (p.teamBudgetUsdPerMonth ?? null) : null;
    // Most keys have no budget: no promise to wait for.
    if (keyBudget === null && teamBudget === null) return next();
    // Both at once: each may wait for a first read of its spend.
    await Promise.all([
      keyBudget !== null ? check("key", p.key.id, keyBudget) : undefined,
      teamBudget !== null ? check("team", p.key.teamId!, teamBudget) : undefined,
    ]);
    return next();
  };
}
