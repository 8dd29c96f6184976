// Pattern entities: a cheap regex finds candidates, a validator (checksum, number plan, address parser)
// decides. Regexes are compiled once here; each detector resets lastIndex before use (calls are synchronous).
import type { CountryCode } from "libphonenumber-js/max";
import { digestMemo } from "../digest-memo";
import type { PiiEntity, Span } from "./types";
import { cardIssuerValid, IBAN_LENGTHS, ibanValid, ipValid, luhnValid, ssnValid } from "./validators";

type Push = (entity: PiiEntity, start: number, end: number) => void;

// ---------------------------------------------------------------------------------------------- secrets
// Provider key formats. Every regex starts with a literal, which V8 scans for at several GB/s (faster than
// indexOf pre-checks, measured). When `group` is set, the secret is that trailing capture group (the
// token after "Bearer ").
interface SecretRule {
  re: RegExp;
  group?: number;
  /** A further check of the whole match. */
  accept?: (match: string) => boolean;
}
const SECRET_RULES: SecretRule[] = [
  // OpenAI sk-, sk-proj-, Anthropic sk-ant-api03-: the tail must mix digits and upper case, which keeps
  // prose like "sk-learn-based-pipeline" out. Checked on the match (`accept`), not by look-aheads: those rescanned
  // the rest of the run at every "sk-", quadratic on a long run of them (180 KB of "sk-sk-…" took 7 s).
  { re: /\bsk-[A-Za-z0-9_-]{20,}/g, accept: (token) => /\d/.test(token) && /[A-Z]/.test(token) },
  { re: /\bgh[pousr]_[A-Za-z0-9]{30,}\b/g },
  { re: /\bgithub_pat_[A-Za-z0-9_]{22,}\b/g },
  { re: /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g },
  {
    re: /aws_secret_access_key["']?\s*[=:]\s*["']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])/gi,
    group: 1,
  },
  { re: /\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])/g },
  { re: /\bxox[abpr]-[A-Za-z0-9-]{10,}/g },
  { re: /https:\/\/hooks\.slack\.com\/services\/[A-Za-z0-9/]{20,}/g },
  { re: /\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}/g },
  // A PEM block; if the END line is missing (truncated paste) the base64 body after BEGIN is taken.
  {
    re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]{0,16384}?-----END [A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\:-]*)/g,
  },
  { re: /\b[Bb]earer\s{1,4}([A-Za-z0-9._~+/-]{16,}=*)/g, group: 1 },
  { re: /\bAuthorization:\s*Basic\s{1,4}([A-Za-z0-9+/]{12,}={0,2})/g, group: 1 },
];

function detectSecrets(text: string, push: Push): void {
  for (const rule of SECRET_RULES) {
    rule.re.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = rule.re.exec(text)) !== null) {
      if (rule.accept && !rule.accept(m[0])) continue;
      let end = m.index + m[0].length;
      const start = rule.group === undefined ? m.index : end - m[rule.group]!.length;
      while (end > start && /\s/.test(text[end - 1]!)) end--; // the PEM fallback may swallow trailing space
      push("INTERNAL_SECRET", start, end);
    }
  }
}

// ---------------------------------------------------------------------------------------------- email
// Found from each "@": expand over local-part and domain characters, then validate the candidate. Internationalised
// addresses (RFC 6531: "zoë.müller@example.com", "用户@例子.广告", IDN domains, "xn--" TLDs) count as much as ASCII ones.
const EMAIL_RE =
  /^[\p{L}\p{N}][\p{L}\p{N}\p{M}._%+-]{0,63}@[\p{L}\p{N}](?:[\p{L}\p{N}\p{M}-]{0,62}[\p{L}\p{N}\p{M}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{N}\p{M}-]{0,62}[\p{L}\p{N}\p{M}])?)*\.(?:\p{L}[\p{L}\p{M}]{1,23}|xn--[a-z0-9-]{1,59})$/u;

/** A letter, digit or combining mark outside ASCII (one UTF-16 unit: astral letters are not taken). */
const UNICODE_WORD = /^[\p{L}\p{N}\p{M}]$/u;
const START_CHAR = /[\p{L}\p{N}]/u;

function isAsciiAlnum(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57);
}

function isWide(c: number): boolean {
  return c >= 0x80 && c < 0xd800 && UNICODE_WORD.test(String.fromCharCode(c));
}

/**
 * Scripts written without spaces between words — Han, kana, Hangul, Thai, Lao, Khmer, Myanmar — so prose runs
 * straight into an ASCII address.
 */
function isUnspaced(c: number): boolean {
  return (
    (c >= 0x3040 && c <= 0x30ff) ||
    (c >= 0x3400 && c <= 0x4dbf) ||
    (c >= 0x4e00 && c <= 0x9fff) ||
    (c >= 0xac00 && c <= 0xd7af) ||
    (c >= 0x0e00 && c <= 0x0eff) ||
    (c >= 0x1780 && c <= 0x17ff) ||
    (c >= 0x1000 && c <= 0x109f)
  );
}

function isAsciiLocal(c: number): boolean {
  return isAsciiAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45;
}

function isAsciiDomain(c: number): boolean {
  return isAsciiAlnum(c) || c === 46 || c === 45;
}

/** A-Z a-z 0-9 . _ % + - and letters, digits and marks of any script. */
function isLocalChar(c: number): boolean {
  return isAsciiLocal(c) || isWide(c);
}

function isDomainChar(c: number): boolean {
  return isAsciiDomain(c) || isWide(c);
}

/**
 * Addresses around each `sep`: "@", or how an "@" is written in a URL ("%40": query strings, logs, redirect links)
 * and in JSON text pasted as prose ("\\u0040"). The span covers the address as written.
 */
function detectEmailsAt(text: string, sep: string, push: Push): void {
  let at = text.indexOf(sep);
  /** Pushes text[s, e) when it is an address (with `sep` read as "@"); whether it was. */
  const accept = (s: number, e: number, after: number): boolean => {
    if (s >= at || e <= after || e - s > 320) return false;
    const candidate = sep === "@" ? text.slice(s, e) : `${text.slice(s, at)}@${text.slice(after, e)}`;
    if (!EMAIL_RE.test(candidate)) return false;
    push("EMAIL_ADDRESS", s, e);
    return true;
  };
  while (at >= 0) {
    const after = at + sep.length;
    let s = at;
    while (s > 0 && isLocalChar(text.charCodeAt(s - 1))) s--;
    // Prose of a script without spaces runs into an ASCII local part ("请联系john@…"): the address starts after it.
    for (let i = at - 1; i > s; i--) {
      if (isUnspaced(text.charCodeAt(i - 1)) && isAsciiAlnum(text.charCodeAt(i))) {
        s = i;
        break;
      }
    }
    while (s < at && !START_CHAR.test(text[s]!)) s++; // a local part starts with a letter or digit
    let e = after;
    while (e < text.length && isDomainChar(text.charCodeAt(e))) e++;
    // …and on after an ASCII domain ("example.com请回复", "example.comครับ"): the address ends before it.
    for (let i = after + 1; i < e; i++) {
      if (isUnspaced(text.charCodeAt(i)) && isAsciiAlnum(text.charCodeAt(i - 1))) {
        e = i;
        break;
      }
    }
    while (e > after && (text[e - 1] === "." || text[e - 1] === "-")) e--; // sentence-final dot
    if (s < at && e > after && !accept(s, e, after)) {
      // Letters of any script around it made the candidate too long or invalid: the plain ASCII address in it.
      let a = at;
      while (a > s && isAsciiLocal(text.charCodeAt(a - 1))) a--;
      while (a < at && !isAsciiAlnum(text.charCodeAt(a))) a++;
      let b = after;
      while (b < e && isAsciiDomain(text.charCodeAt(b))) b++;
      while (b > after && (text[b - 1] === "." || text[b - 1] === "-")) b--;
      accept(a, b, after);
    }
    at = text.indexOf(sep, Math.max(e, after));
  }
}

function detectEmails(text: string, push: Push): void {
  detectEmailsAt(text, "@", push);
  if (text.includes("%40")) detectEmailsAt(text, "%40", push);
  if (text.includes("\\u0040")) detectEmailsAt(text, "\\u0040", push);
}

// ---------------------------------------------------------------------------------------------- IBAN
const IBAN_RE = /\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b/g;

function detectIbans(text: string, push: Push): void {
  IBAN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = IBAN_RE.exec(text)) !== null) {
    const raw = m[0];
    const len = IBAN_LENGTHS.get(raw.slice(0, 2));
    if (len === undefined) continue;
    // Take exactly `len` significant characters; the candidate may run on into a following code.
    let n = 0;
    let i = 0;
    for (; i < raw.length && n < len; i++) if (raw[i] !== " ") n++;
    if (n < len || (i < raw.length && raw[i] !== " ")) continue;
    const value = raw.slice(0, i);
    if (ibanValid(value.replace(/ /g, ""))) push("IBAN", m.index, m.index + i);
  }
}

// ---------------------------------------------------------------------------------------------- cards
// Not after "+": "+4915112345678" is a phone number even when its digits pass Luhn.
const CARD_RE = /(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)/g;

function cardGroupsPlausible(raw: string): boolean {
  const groups = raw.split(/[ -]/);
  if (groups.length === 1) return true;
  const sizes = groups.map((g) => g.length).join(",");
  if (sizes === "4,6,5" || sizes === "4,6,4") return true; // Amex, Diners
  for (let i = 0; i < groups.length - 1; i++) if (groups[i]!.length !== 4) return false;
  return groups[groups.length - 1]!.length <= 4;
}

function detectCards(win: string, at: number, push: Push): void {
  CARD_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = CARD_RE.exec(win)) !== null) {
    const digits = m[0].replace(/[ -]/g, "");
    if (cardIssuerValid(digits) && luhnValid(digits) && cardGroupsPlausible(m[0]))
      push("CREDIT_CARD", at + m.index, at + m.index + m[0].length);
  }
}

// ---------------------------------------------------------------------------------------------- SSN
const SSN_RE = /(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])/g;
// Nine bare digits are an SSN only right after the words that say so.
const SSN_BARE_RE = /\b(?:ssn|social security(?: number| no\.?)?)\W{0,4}(\d{3})(\d{2})(\d{4})(?!\w)/gi;

function detectSsns(win: string, at: number, push: Push): void {
  let m: RegExpExecArray | null;
  SSN_RE.lastIndex = 0;
  while ((m = SSN_RE.exec(win)) !== null) {
    if (ssnValid(m[1]!, m[3]!, m[4]!)) push("US_SSN", at + m.index, at + m.index + m[0].length);
  }
}

function detectBareSsns(text: string, push: Push): void {
  let m: RegExpExecArray | null;
  SSN_BARE_RE.lastIndex = 0;
  while ((m = SSN_BARE_RE.exec(text)) !== null) {
    const end = m.index + m[0].length;
    if (ssnValid(m[1]!, m[2]!, m[3]!)) push("US_SSN", end - 9, end);
  }
}

// ---------------------------------------------------------------------------------------------- IP
const IPV4_RE = /(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)/g;
const IPV6_RE = /^[0-9A-Fa-f:]+(?:\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w]+)?$/;
/**
 * A dotted quad right after a version keyword is a version, not an address: "version 1.2.3.4", "build=1.2.3.4",
 * "v1.2.3.4". Each keyword must be a word of its own ("server 10.0.0.1", "resolver 8.8.4.4", "dev 10.1.2.3" are
 * addresses), and a lone "v" must touch the number.
 */
const VERSION_BEFORE_RE = /(?<![A-Za-z])(?:(?:version|ver\.?|release|build)\s*[=:]?\s*|v[=:]?)["']?$/i;

function detectIpv4(text: string, win: string, at: number, push: Push): void {
  let m: RegExpExecArray | null;
  IPV4_RE.lastIndex = 0;
  while ((m = IPV4_RE.exec(win)) !== null) {
    const s = at + m.index;
    if (!ipValid(m[0])) continue;
    if (VERSION_BEFORE_RE.test(text.slice(Math.max(0, s - 12), s))) continue;
    push("IP_ADDRESS", s, s + m[0].length);
  }
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

function isV6Char(c: number): boolean {
  return isHex(c) || c === 58 || c === 46; // hex, ':' and '.' (embedded IPv4)
}

function isWordChar(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
}

// IPv6 from each ':' that has a hex digit or another ':' beside it: expand over address characters and
// let node:net decide. Times ("10:30:45"), MACs and "std::vector" fail validation.
function detectIpv6(text: string, push: Push): void {
  let c = text.indexOf(":");
  while (c >= 0) {
    const before = c > 0 ? text.charCodeAt(c - 1) : 0;
    const after = c + 1 < text.length ? text.charCodeAt(c + 1) : 0;
    if (!(isHex(before) || before === 58) || !(isHex(after) || after === 58)) {
      c = text.indexOf(":", c + 1);
      continue;
    }
    let s = c;
    while (s > 0 && isV6Char(text.charCodeAt(s - 1))) s--;
    let e = c + 1;
    while (e < text.length && isV6Char(text.charCodeAt(e))) e++;
    if (e < text.length && text[e] === "%")
      while (e + 1 < text.length && isWordChar(text.charCodeAt(e + 1))) e++;
    let v = text.slice(s, e);
    while (v.length > 0 && (v.endsWith(".") || (v.endsWith(":") && !v.endsWith("::")))) v = v.slice(0, -1);
    const prev = s > 0 ? text.charCodeAt(s - 1) : 0;
    const next = s + v.length < text.length ? text.charCodeAt(s + v.length) : 0;
    // Require digits: "dead:beef:cafe::" style words are more often code than addresses.
    if (!isWordChar(prev) && !isWordChar(next) && /\d/.test(v) && IPV6_RE.test(v) && ipValid(v))
      push("IP_ADDRESS", s, s + v.length);
    c = text.indexOf(":", Math.max(e, c + 1));
  }
}

// ---------------------------------------------------------------------------------------------- phone
// Candidates: an optional +/00, digits with single separators, optional (area) group; 7-15 digits.
// Separators between digit groups are mandatory (a bare run is its own alternative), so a long digit run
// cannot be split in exponentially many ways when the match fails.
const PHONE_RE =
  /(?<![\w+@/#$.-]|\d[ ])(?:\+|00)?(?:\d{7,15}|(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:(?:[ .-]|\) ?| ?\()\d{1,6}){1,6})(?![\w@/-]|[.,]\d|[ -]\d)/g;
const DATE_LIKE_RE = /^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$/;
const DATE_START_RE = /^\d{4}-\d{2}-\d{2}(?!\d)/;
const PHONE_CONTEXT_RE =
  /(?:phone|tel|telephone|mobile|cell|call|fax|sms|text|whatsapp|ring|dial|reach|contact|number|nr|no\.?|#)\s*(?:me|us|him|her|them)?\s*(?:at|on|:)?\s*$/i;
const NOT_PHONE_BEFORE_RE =
  /(?:order|invoice|ticket|id|account|acct|ref|reference|tracking|build|job|pid|port|#)\s*(?:number|no\.?|nr|id|:)?\s*[:#]?\s*$/i;
const NATIONAL_REGIONS: CountryCode[] = ["GB", "DE", "FR", "AU", "IN", "NL", "IT", "ES", "IE"];

/**
 * Verdicts on phone candidates, keyed by the SHA-1 of the candidate (no number is kept). libphonenumber's full
 * metadata check costs ~20 µs per region tried (up to ten for a national-format number), and the same numbers come
 * back with every turn of a conversation, whose history is sent again each time.
 */
const phoneVerdicts = digestMemo<boolean>(10_000);

/** Forget every cached verdict (the scrubber benchmark measures uncached throughput). */
export function clearPhoneVerdicts(): void {
  phoneVerdicts.clear();
}

/**
 * libphonenumber's full metadata (~40-55 ms and ~9 MiB of RSS to load): loaded by an engine that scrubs phone
 * numbers when it is created (loadPhoneMetadata), so a process with PII off never loads it and a request never
 * waits for it.
 */
let phoneLib: typeof import("libphonenumber-js/max") | null = null;

export function loadPhoneMetadata(): typeof import("libphonenumber-js/max") {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  phoneLib ??= require("libphonenumber-js/max") as typeof import("libphonenumber-js/max");
  return phoneLib;
}

function phoneValid(candidate: string): boolean {
  return phoneVerdicts.get(candidate, checkPhone);
}

function checkPhone(candidate: string): boolean {
  const { parsePhoneNumberFromString } = loadPhoneMetadata();
  if (candidate.startsWith("+") || candidate.startsWith("00")) {
    const intl = candidate.startsWith("00") ? "+" + candidate.slice(2) : candidate;
    const p = parsePhoneNumberFromString(intl);
    return p !== undefined && p.isValid();
  }
  if (candidate.startsWith("0") || candidate.startsWith("(0")) {
    for (const region of NATIONAL_REGIONS) {
      const p = parsePhoneNumberFromString(candidate, region);
      if (p !== undefined && p.isValid()) return true;
    }
    return false;
  }
  const p = parsePhoneNumberFromString(candidate, "US");
  return p !== undefined && p.isValid();
}

function detectPhones(text: string, win: string, at: number, push: Push): void {
  PHONE_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = PHONE_RE.exec(win)) !== null) {
    const raw = m[0];
    const index = at + m.index;
    let digits = 0;
    for (let i = 0; i < raw.length; i++) {
      const c = raw.charCodeAt(i);
      if (c >= 48 && c <= 57) digits++;
    }
    if (digits < 8 || digits > 15) continue;
    if (DATE_LIKE_RE.test(raw) || DATE_START_RE.test(raw)) continue;
    if (raw.indexOf(")") >= 0 && raw.indexOf("(") < 0) continue;
    if (/^\d+(?:\.\d+){2,}$/.test(raw)) continue; // dotted version strings and IPs
    const before = text.slice(Math.max(0, index - 24), index);
    const separated = /[^\d]/.test(raw);
    if (!separated && !PHONE_CONTEXT_RE.test(before)) continue; // a bare digit run needs a phone word
    if (!raw.startsWith("+") && NOT_PHONE_BEFORE_RE.test(before)) continue;
    if (phoneValid(raw)) push("PHONE_NUMBER", index, index + raw.length);
  }
}

// Every phone number, SSN, card number and IPv4 address lies inside a run of digits and separators. The
// numeric detectors run only on a small window around each run long enough to hold one, so prose, code
// and identifiers are skipped at regex-engine speed.
const NUM_RUN_RE = /[+(]?\d[\d ().-]{5,}\d\)?/g;

/** Runs every enabled pattern detector over `text`, pushing raw (possibly overlapping) spans. */
export function detectPatterns(text: string, enabled: ReadonlySet<PiiEntity>, out: Span[]): void {
  const push: Push = (entity, start, end) => {
    out.push({ entity, start, end });
  };
  if (enabled.has("INTERNAL_SECRET")) detectSecrets(text, push);
  if (enabled.has("EMAIL_ADDRESS")) detectEmails(text, push);
  if (enabled.has("IBAN")) detectIbans(text, push);
  if (enabled.has("US_SSN")) detectBareSsns(text, push);
  if (enabled.has("IP_ADDRESS") && text.indexOf(":") >= 0) detectIpv6(text, push);
  const phone = enabled.has("PHONE_NUMBER");
  const ssn = enabled.has("US_SSN");
  const card = enabled.has("CREDIT_CARD");
  const ip = enabled.has("IP_ADDRESS");
  if (!phone && !ssn && !card && !ip) return;
  NUM_RUN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = NUM_RUN_RE.exec(text)) !== null) {
    // Two characters of margin each side: the candidate regexes look one or two characters around them.
    const at = Math.max(0, m.index - 2);
    const win = text.slice(at, Math.min(text.length, m.index + m[0].length + 2));
    if (ip && m[0].indexOf(".") >= 0) detectIpv4(text, win, at, push);
    if (m[0].length < 9) continue;
    if (phone) detectPhones(text, win, at, push);
    if (ssn) detectSsns(win, at, push);
    if (card && m[0].length >= 13) detectCards(win, at, push);
  }
}
