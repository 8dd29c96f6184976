/**
 * Process entry: config → (primary) migrations, embedded services, workers │ (worker) adapters → app → listen.
 * node:cluster runs WORKERS workers sharing the port; the primary replaces a crashed worker, aggregates metrics,
 * and on SIGTERM drains every worker before it exits 0. Each role loads only its own modules, so the primary stays
 * small and start-up is not paid twice.
 */
import cluster from "node:cluster";
import { ConfigError, loadConfig, type Config } from "./config";
import { EXIT_CANNOT_START, StartupError } from "./lib/startup";

function load(): Config {
  try {
    return loadConfig({ env: process.env });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`llm-proxy: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}

/* eslint-disable @typescript-eslint/no-require-imports -- each role requires only its own module tree */
const config = load();
if (cluster.isPrimary) {
  (require("./primary") as typeof import("./primary")).runPrimary(config).catch((error) => {
    process.stderr.write(`llm-proxy: ${startFailure(error)}\n`);
    process.exit(1);
  });
} else {
  (require("./worker") as typeof import("./worker")).runWorker(config).catch((error) => {
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
