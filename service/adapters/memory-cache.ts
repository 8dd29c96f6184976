/**
 * In-process response cache for the embedded default: a bounded LRU (entry count and total bytes) with a TTL per
 * entry. Entries are kept as JSON text, so every hit hands out fresh objects that later stages may mutate (PII
 * restore) without touching the cached copy.
 */
import { LRUCache } from "lru-cache";
import type { CachedResponse, ResponseCache } from "../ports";
import { entryText, parseEntry } from "../lib/cache-entry";

export interface MemoryCacheOptions {
  /** Most entries kept. Default 10,000 (Config.cache.maxEntries). */
  maxEntries?: number;
  /** Most bytes of JSON kept across entries. Default 64 MiB. */
  maxBytes?: number;
}

export class MemoryResponseCache implements ResponseCache {
  private readonly lru: LRUCache<string, string>;

  constructor(opts: MemoryCacheOptions = {}) {
    this.lru = new LRUCache<string, string>({
      max: opts.maxEntries ?? 10_000,
      maxSize: opts.maxBytes ?? 64 * 1024 * 1024,
      sizeCalculation: (v) => Math.max(1, v.length),
      ttlAutopurge: false,
    });
  }

  async get(key: string): Promise<CachedResponse | null> {
    const text = this.lru.get(key);
    return text === undefined ? null : parseEntry(text);
  }

  async set(key: string, value: CachedResponse, ttlSeconds: number): Promise<void> {
    const text = entryText(value);
    // Entries larger than the whole budget are skipped rather than evicting everything else.
    if (text.length > this.lru.maxSize / 4) return;
    this.lru.set(key, text, { ttl: ttlSeconds * 1000 });
  }

  /** Entries currently held (tests, diagnostics). */
  size(): number {
    return this.lru.size;
  }

  async close(): Promise<void> {
    this.lru.clear();
  }
}
