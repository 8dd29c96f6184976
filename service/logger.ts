/**
 * pino JSON logs. Authorization headers, keys and passwords are redacted; prompt and response text are never logged
 * (stages log ids, models, counts and durations only).
 */
import pino, { type Logger } from "pino";

/** `isoTime`, but formatted once per millisecond: under load many lines share one (a Date per line shows in profiles). */
let stampMs = -1;
let stamp = "";
function isoTime(): string {
  const now = Date.now();
  if (now !== stampMs) {
    stampMs = now;
    stamp = `,"time":"${new Date(now).toISOString()}"`;
  }
  return stamp;
}

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...bindings },
    timestamp: isoTime,
    // Nothing logs headers or key objects; these paths are a safety net for an error object that carries them.
    // (Wildcard paths cost CPU on every line, so the list stays short and explicit.)
    redact: {
      paths: [
        "req.headers.authorization",
        'req.headers["x-api-key"]',
        "headers.authorization",
        'headers["x-api-key"]',
        "err.config.headers.authorization",
      ],
      censor: "[redacted]",
    },
  });
}

export type { Logger };
