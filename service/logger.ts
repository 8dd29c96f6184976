/**
 * pino JSON logs. Authorization headers, keys and passwords are redacted; prompt and response text are never logged
 * (stages log ids, models, counts and durations only).
 */
import fs from "node:fs";
import pino, { type Logger } from "pino";
import { isoUtc } from "./lib/iso-time";

/** `isoTime`, but formatted once per millisecond: under load many lines share one (a Date per line shows in profiles). */
let stampMs = -1;
let stamp = "";
function isoTime(): string {
  const now = Date.now();
  if (now !== stampMs) {
    stampMs = now;
    stamp = `,"time":"${isoUtc(now)}"`;
  }
  return stamp;
}

export interface LoggerOptions {
  /**
   * Write lines in blocks of at least 4 KiB, and at least every `flushMs` ms (0 = each line at once, pino's default).
   * Under load one write(2) then carries dozens of lines instead of one each. Blocks are written synchronously, on
   * the event loop: no write in flight on the thread pool, so lines keep their order at exit and a block never
   * interleaves with another, and a stdout that stops being read pushes back instead of growing a buffer without
   * bound. What is still buffered is written when the process exits (including a fatal error's exit). Only a
   * SIGKILL loses up to `flushMs` of lines.
   */
  flushMs?: number;
}

const BLOCK_CHARS = 4096;
const NAP = new Int32Array(new SharedArrayBuffer(4));

/** The longest a block waits for a full stdout before it is dropped: a reader that stopped must not stall requests. */
const MAX_WAIT_MS = 2_000;

/** Set when a block was dropped for a reader that stopped: later blocks do not wait for it again until one fits. */
let readerStalled = false;

/**
 * All of `data` to `fd`, synchronously. A full non-blocking pipe (EAGAIN) is waited out 10 ms at a time, up to
 * MAX_WAIT_MS per block, rather than dropping lines at once; past that the rest of the block is dropped and, while the
 * reader stays stuck, so are the next blocks that do not fit, without waiting. Any other error (stdout closed) drops
 * the block too: logging never throws into a request, nor stalls requests behind a reader that stopped.
 */
function writeAllSync(fd: number, data: Buffer): void {
  let offset = 0;
  let waited = 0;
  while (offset < data.length) {
    try {
      offset += fs.writeSync(fd, data, offset, data.length - offset);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") return;
      if (readerStalled || waited >= MAX_WAIT_MS) {
        readerStalled = true;
        return;
      }
      Atomics.wait(NAP, 0, 0, 10);
      waited += 10;
    }
  }
  readerStalled = false;
}

/**
 * stdout, buffered in blocks (see `LoggerOptions.flushMs`). A warning, an error or a fatal line is written at once,
 * with everything before it: those are the lines an operator needs now, and the ones a crash must not take along.
 * Lines are kept as a list and joined once per block: pino's own sonic-boom measures the growing block's byte
 * length on every line, which flattens and rescans it each time (~1.1 µs of ~3 per access line).
 */
function blockDestination(flushMs: number): pino.DestinationStream {
  let lines: string[] = [];
  let chars = 0;
  const flushSync = () => {
    if (chars === 0) return;
    const text = lines.length === 1 ? lines[0] : lines.join("");
    lines = [];
    chars = 0;
    writeAllSync(1, Buffer.from(text, "utf8"));
  };
  setInterval(flushSync, flushMs).unref();
  process.once("exit", flushSync);
  return {
    write(line: string) {
      lines.push(line);
      chars += line.length;
      // Lines start with `{"level":NN`: 40 warn, 50 error, 60 fatal.
      if (chars >= BLOCK_CHARS || line.charCodeAt(9) >= 52 /* "4" */) flushSync();
    },
    // `logger.flush()` reaches the destination through these.
    flush(cb?: (err?: Error) => void) {
      flushSync();
      cb?.();
    },
    flushSync,
  } as pino.DestinationStream;
}

export function createLogger(
  level: string,
  bindings: Record<string, unknown> = {},
  opts: LoggerOptions = {},
): Logger {
  const options: pino.LoggerOptions = {
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
  };
  return opts.flushMs ? pino(options, blockDestination(opts.flushMs)) : pino(options);
}

type Level = "info" | "debug";
interface PinoInternals {
  [key: symbol]: unknown;
}

/**
 * A writer for one fixed-shape line (the access line, once per request). It writes exactly what
 * `log[level](fields, msg)` would — pino's level prefix, timestamp, the logger's bindings, the fields, the message —
 * but serialises the flat fields with one JSON.stringify instead of pino's per-key walk, which costs several times
 * more per line. Fields must be flat, plain values (no errors, no secrets: nothing here is redacted). Falls back to
 * pino itself when the logger has anything that changes a line (mixin, hooks, log formatter, a multistream).
 */
export function lineWriter(
  log: Logger,
  msg: string,
): (level: Level, fields: Record<string, unknown>) => void {
  const { symbols } = pino;
  const l = log as unknown as PinoInternals;
  const stream = l[symbols.streamSym] as { write(s: string): unknown } & PinoInternals;
  const formatters = l[symbols.formattersSym] as { log?: unknown } | undefined;
  const hooks = l[symbols.hooksSym] as { streamWrite?: unknown; logMethod?: unknown } | undefined;
  const plain =
    typeof stream?.write === "function" &&
    stream[symbols.needsMetadataGsym] !== true &&
    !l[symbols.mixinSym] &&
    !formatters?.log &&
    !hooks?.streamWrite &&
    !hooks?.logMethod &&
    typeof l[(symbols as unknown as Record<string, symbol>).msgPrefixSym] !== "string";
  if (!plain) return (level, fields) => log[level](fields, msg);
  const lsCache = l[symbols.lsCacheSym] as Record<number, string>;
  const time = l[symbols.timeSym] as () => string;
  const end = `,${JSON.stringify(l[symbols.messageKeySym] ?? "msg")}:${JSON.stringify(msg)}}\n`;
  return (level, fields) => {
    if (!log.isLevelEnabled(level)) return;
    const json = JSON.stringify(fields);
    const body = json.length > 2 ? `,${json.slice(1, -1)}` : "";
    stream.write(
      `${lsCache[log.levels.values[level]]}${time()}${l[symbols.chindingsSym] as string}${body}${end}`,
    );
  };
}

export type { Logger };
