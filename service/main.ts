/**
 * Process entry: config → (primary) migrations, embedded services, workers │ (worker) adapters → app → listen.
 * node:cluster runs WORKERS workers sharing the port; the primary replaces a crashed worker, aggregates metrics,
 * and on SIGTERM drains every worker before it exits 0. Each role loads only its own modules, so the primary stays
 * small and start-up is not paid twice.
 */
import cluster from "node:cluster";
import { ConfigError, loadConfig, type Config } from "./config";

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
    process.stderr.write(`llm-proxy: failed to start: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
} else {
  (require("./worker") as typeof import("./worker")).runWorker(config).catch((error) => {
    process.stderr.write(`llm-proxy worker: failed to start: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}
