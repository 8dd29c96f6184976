/**
 * REDIS_URL as one URL, or — for a Redis Cluster — several seed nodes separated by commas, each a full
 * `redis://` / `rediss://` URL (`rediss://:pw@node-a:6379,rediss://:pw@node-b:6379`). A comma is only a separator
 * where the next URL's scheme follows it, so a password that contains a comma stays intact.
 */
const SEPARATOR = /\s*,\s*(?=rediss?:\/\/)/;
const SCHEME = /^(rediss?):\/\//;

/** The URLs listed in REDIS_URL, in order (one element for a single URL). */
export function splitRedisUrls(value: string): string[] {
  return value.trim().split(SEPARATOR);
}

/** Why a (comma-separated) REDIS_URL cannot be used, or null when it can. */
export function redisUrlProblem(value: string, cluster: boolean): string | null {
  const urls = splitRedisUrls(value);
  if (urls.length > 1 && !cluster) {
    return "several comma-separated URLs are seed nodes of a Redis Cluster: set REDIS_CLUSTER=true, or give one URL";
  }
  // Every entry after the first starts with a scheme by construction (see SEPARATOR); the first is checked by
  // the REDIS_URL schema.
  if (new Set(urls.map((u) => SCHEME.exec(u)?.[1])).size > 1) {
    return "the seed nodes must all use redis:// or all rediss://";
  }
  return null;
}
