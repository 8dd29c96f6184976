/**
 * Secrets a provider's error text might echo back — "Incorrect API key provided: sk-…", a 400 quoting the request's
 * headers — replaced before that text reaches a client, a log line or a usage row. The proxy's own provider
 * credentials are known exactly (registered when providers are built); key shapes of the common APIs are caught by
 * form, whoever's they are.
 */
const known = new Set<string>();

/** Credentials shorter than this are not looked for (a header like `true` or `v1` is not a secret). */
const MIN_SECRET_CHARS = 12;

export function registerSecret(value: string | null | undefined): void {
  if (value && value.length >= MIN_SECRET_CHARS) known.add(value);
}

const KEY_SHAPES =
  /\b(?:sk-(?:ant-|proj-|llmp-)?[A-Za-z0-9_-]{12,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abeprs]-[A-Za-z0-9-]{10,})/g;

export const REDACTED = "[REDACTED]";

export function redactSecrets(text: string): string {
  let out = text;
  for (const secret of known) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  return out.replace(KEY_SHAPES, REDACTED);
}
