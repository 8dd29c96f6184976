/**
 * pino JSON logs. Authorization headers, keys and passwords are redacted; prompt and response text are never logged
 * (stages log ids, models, counts and durations only).
 */
import pino, { type Logger } from "pino";

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        "req.headers.authorization",
        "req.headers['x-api-key']",
        "headers.authorization",
        "headers['x-api-key']",
        "*.apiKey",
        "*.api_key",
        "*.password",
        "*.masterKey",
        "*.key",
        "key",
        "apiKey",
        "password",
        "masterKey",
      ],
      censor: "[redacted]",
    },
  });
}

export type { Logger };
