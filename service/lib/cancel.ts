/**
 * A cheap cancellation signal for the per-request upstream call. A Node `AbortController` (an EventTarget) costs a
 * measurable share of a request's CPU and garbage once undici adds and removes its listener; undici accepts any
 * EventEmitter with an `aborted` flag as `signal`, and so does everything here that waits on one.
 */
import { EventEmitter } from "node:events";

export class Cancellation extends EventEmitter {
  aborted = false;

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.emit("abort");
  }
}

/** What providers accept: a `Cancellation` (requests) or a standard AbortSignal (timeouts, knowledge base). */
export type CancelSignal = AbortSignal | Cancellation;

/** Calls `fn` once when the signal fires; returns the function that removes the listener. */
export function onCancel(signal: CancelSignal, fn: () => void): () => void {
  if (signal instanceof Cancellation) {
    signal.once("abort", fn);
    return () => signal.removeListener("abort", fn);
  }
  signal.addEventListener("abort", fn, { once: true });
  return () => signal.removeEventListener("abort", fn);
}

/** Waits `ms`; rejects with an AbortError as soon as the signal fires (at once if it already has). */
export function delay(ms: number, signal?: CancelSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const aborted = () => new DOMException("The operation was aborted", "AbortError");
    if (signal?.aborted) {
      reject(aborted());
      return;
    }
    let off = () => {};
    const timer = setTimeout(() => {
      off();
      resolve();
    }, ms);
    if (signal) {
      off = onCancel(signal, () => {
        clearTimeout(timer);
        reject(aborted());
      });
    }
  });
}
