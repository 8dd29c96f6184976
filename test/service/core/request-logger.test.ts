import http from "node:http";
import type { AddressInfo } from "node:net";
import Koa from "koa";
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { UsageSink } from "../../../service/ports";
import { createRequestContext } from "../../../service/stages/request-context";
import type { ProxyState } from "../../../service/state";

const sink: UsageSink = {
  record() {},
  flush: async () => {},
  close: async () => {},
  pending: () => 0,
};

describe("the request's logger", () => {
  let server: http.Server | null = null;
  afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

  async function serve(handler: (state: ProxyState) => void) {
    const lines: Array<Record<string, unknown>> = [];
    const root = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const child = vi.spyOn(root, "child");
    const app = new Koa<ProxyState>();
    app.use(createRequestContext({ log: root, usageSink: sink, isDraining: () => false }));
    app.use((ctx) => {
      handler(ctx.state);
      ctx.body = "ok";
    });
    server = http.createServer(app.callback()).listen(0, "127.0.0.1");
    await new Promise((r) => server!.once("listening", r));
    const res = await fetch(
      `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`,
      {
        headers: { "x-request-id": "req-42" },
      },
    );
    await res.text();
    return { child, lines };
  }

  it("is not created when a stage only hands it around", async () => {
    const handedAround: unknown[] = [];
    const { child } = await serve((state) => handedAround.push(state.log));
    expect(handedAround).toHaveLength(1);
    expect(child).not.toHaveBeenCalled();
  });

  it("is created once on first use and carries the request id", async () => {
    const { child, lines } = await serve((state) => {
      const log = state.log;
      log.warn({ attempt: 1 }, "first");
      log.warn({ attempt: 2 }, "second");
    });
    expect(child).toHaveBeenCalledTimes(1);
    const warnings = lines.filter((l) => l.level === 40);
    expect(warnings.map((l) => [l.msg, l.requestId, l.route])).toEqual([
      ["first", "req-42", "chat"],
      ["second", "req-42", "chat"],
    ]);
  });
});
