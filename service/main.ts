/**
 * Process entry: config → (primary) migrations, embedded services, workers │ (worker) adapters → app → listen.
 * node:cluster runs WORKERS workers sharing the port; the primary replaces a crashed worker, aggregates metrics,
 * and on SIGTERM drains every worker before it exits 0. Each role loads only its own modules, so the primary stays
 * small and start-up is not paid twice.
 */
import cluster from "node:cluster";
import fs from "node:fs";
import { ConfigError, configWarnings, embeddedEnv, loadConfig, type Config } from "./config";
import { EXIT_CANNOT_START, StartupError } from "./lib/startup";

/**
 * `--embedded` (what `npm start` passes): the embedded default even when the shell exports DATABASE_URL or
 * REDIS_URL. They are removed from this process's environment before anything reads it, so the workers (forked
 * with it, and with the same arguments) see the same; the primary says in one line what it ignored.
 */
if (process.argv.includes("--embedded")) {
  const { ignored } = embeddedEnv(process.env);
  for (const name of ignored) delete process.env[name];
  if (cluster.isPrimary && ignored.length)
    process.stderr.write(
      `llm-proxy: --embedded: ignoring ${ignored.join(", ")} from the environment (the embedded default uses PGlite under DATA_DIR and in-process limits and cache; run without --embedded to use them)\n`,
    );
}

/**
 * The primary's config, and the config file's text as read once: workers parse that text (sent with their init),
 * never the file again, so a file changed after the start (a ConfigMap update) neither splits a pod between two
 * configurations nor, when broken, stops every replacement of a crashed worker.
 */
function load(): { config: Config; fileText: string | undefined } {
  try {
    let fileText: string | undefined;
    if (process.env.CONFIG_FILE) {
      try {
        fileText = fs.readFileSync(process.env.CONFIG_FILE, "utf8");
      } catch {
        // loadConfig reports the file it cannot read
      }
    }
    const config = loadConfig({ env: process.env, fileText });
    for (const warning of configWarnings(process.env, config))
      process.stderr.write(`llm-proxy: warning: ${warning}\n`);
    return { config, fileText };
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`llm-proxy: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}

/* eslint-disable @typescript-eslint/no-require-imports -- each role requires only its own module tree */
if (cluster.isPrimary) {
  const { config, fileText } = load();
  (require("./primary") as typeof import("./primary")).runPrimary(config, fileText).catch((error) => {
    process.stderr.write(`llm-proxy: ${startFailure(error)}\n`);
    process.exit(1);
  });
} else {
  (require("./worker") as typeof import("./worker")).runWorker().catch((error) => {
    process.stderr.write(`llm-proxy worker: ${startFailure(error)}\n`);
    // A failure the user must fix: the primary stops instead of starting replacements that fail alike.
    process.exit(error instanceof StartupError ? EXIT_CANNOT_START : 1);
  });
}

/** One line naming the setting to fix for a known failure; the stack for anything else. */
function startFailure(error: unknown): string {
  if (error instanceof StartupError) return error.message;
  return `failed to start: ${(error as Error).stack ?? String(error)}`;
}
