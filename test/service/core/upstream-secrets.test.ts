/**
 * A provider's error passed through to the client (a 400 or 404 explains what was wrong with the request) must not
 * carry the proxy's own provider credentials, whatever the provider echoes: not in the message, the type or the code
 * the client gets, nor in the usage row or the logs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FakeUpstream } from "../../helpers/fake-upstream";
import { startUpstreamProxy, type TestProxy } from "../../helpers/proxy";

const PROVIDER_KEY = "pk-live-0123456789abcdefABCDEF";

describe("upstream errors passed through: no provider credential", () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let key: string;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ upstream, proxy, key, close } = await startUpstreamProxy(
      (baseUrl) =>
        [
          "providers:",
          `  up: { type: openai, base_url: "${baseUrl}", api_key_env: TEST_PROVIDER_KEY, max_retries: 0 }`,
          "models:",
          "  - { name: m, provider: up }",
        ].join("\n"),
      { TEST_PROVIDER_KEY: PROVIDER_KEY },
    ));
  });
  afterAll(async () => {
    await close?.();
  });

  const ask = async () => {
    const res = await fetch(`${proxy.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
    });
    return { status: res.status, text: await res.text() };
  };

  it("redacts the provider key and key-shaped tokens the provider echoes, and drops a code that is not an identifier", async () => {
    upstream.behave({
      kind: "status",
      status: 400,
      body: {
        error: {
          message: `Bad parameter. Your headers: Authorization: Bearer ${PROVIDER_KEY}; other key sk-proj-ABCDEFGHIJKLMNOP1234`,
          type: `t_${PROVIDER_KEY}`,
          code: `c_${PROVIDER_KEY}`,
        },
      },
    });
    try {
      const res = await ask();
      expect(res.status).toBe(400);
      const error = JSON.parse(res.text).error;
      expect(error.message).toBe(
        "Bad parameter. Your headers: Authorization: Bearer [REDACTED]; other key [REDACTED]",
      );
      expect(error).toMatchObject({ type: "invalid_request_error", code: "upstream_rejected" });
      expect(res.text).not.toContain(PROVIDER_KEY);
      const rows = await proxy.usageRows();
      expect(JSON.stringify(rows)).not.toContain(PROVIDER_KEY);
      expect(rows.at(-1)).toMatchObject({ status: 400, error_code: "upstream_rejected" });
    } finally {
      upstream.behave({ kind: "ok" });
    }
  });

  it("keeps a provider's own identifier codes and its message when they hold no credential", async () => {
    upstream.behave({
      kind: "status",
      status: 400,
      body: {
        error: {
          message: "temperature must be <= 2",
          type: "invalid_request_error",
          code: "bad_temperature",
        },
      },
    });
    try {
      const error = JSON.parse((await ask()).text).error;
      expect(error).toMatchObject({ message: "temperature must be <= 2", code: "bad_temperature" });
    } finally {
      upstream.behave({ kind: "ok" });
    }
  });
});
