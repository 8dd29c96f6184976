/** Pure IPv4 CIDR arithmetic shared by the cloud folders' subnet plans. */

export function ipToInt(ip: string): number {
  const parts = ip.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`"${ip}" is not an IPv4 address.`);
  }
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** True for `a.b.c.d/n` with every octet 0-255 and a prefix length 0-32. */
export function isIpv4Cidr(cidr: string): boolean {
  if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(cidr)) return false;
  try {
    parseCidr(cidr);
    return true;
  } catch {
    return false;
  }
}

export function parseCidr(cidr: string): { base: number; prefix: number } {
  const [ip, bits] = cidr.split("/");
  const prefix = Number(bits);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32)
    throw new Error(`"${cidr}" is not an IPv4 CIDR.`);
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  return { base: (ipToInt(ip) & mask) >>> 0, prefix };
}

/**
 * The `index`-th block of size /`prefix` inside `cidr`, counting from `offset` addresses into it.
 * Throws when the block does not fit.
 */
export function subBlock(cidr: string, prefix: number, index: number, offset = 0): string {
  const parent = parseCidr(cidr);
  if (prefix < parent.prefix) throw new Error(`A /${prefix} does not fit in ${cidr}.`);
  const size = 2 ** (32 - prefix);
  const start = parent.base + offset + index * size;
  if (start + size > parent.base + 2 ** (32 - parent.prefix)) {
    throw new Error(`Block ${index} of /${prefix} at offset ${offset} does not fit in ${cidr}.`);
  }
  return `${intToIp(start)}/${prefix}`;
}

/** The CIDR with its host bits cleared (`10.41.1.0/16` → `10.41.0.0/16`): the form the clouds accept. */
export function canonicalCidr(cidr: string): string {
  const { base, prefix } = parseCidr(cidr);
  return `${intToIp(base)}/${prefix}`;
}

/** True when two IPv4 CIDRs share at least one address. */
export function cidrsOverlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  const end = (c: { base: number; prefix: number }) => c.base + 2 ** (32 - c.prefix);
  return x.base < end(y) && y.base < end(x);
}
