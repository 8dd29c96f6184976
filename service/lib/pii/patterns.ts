// Pattern entities: a cheap regex finds candidates, a validator (checksum, number plan, address parser)
// decides. Regexes are compiled once here; each detector resets lastIndex before use (calls are synchronous).
import { parsePhoneNumberFromString, type CountryCode } from "libphonenumber-js/max";
import type { PiiEntity, Span } from "./types";
import { cardIssuerValid, IBAN_LENGTHS, ibanValid, ipValid, luhnValid, ssnValid } from "./validators";

type Push = (entity: PiiEntity, start: number, end: number) => void;

// ---------------------------------------------------------------------------------------------- secrets
// Provider key formats. Each alternative is anchored on a literal prefix, so the scan is cheap.
const SECRET_RE = new RegExp(
  [
    // OpenAI sk-, sk-proj-, Anthropic sk-ant-api03-: the tail must mix digits and upper case, which
    // keeps prose like "sk-learn-based-pipeline" out.
    String.raw`\bsk-(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Z])[A-Za-z0-9_-]{20,}`,
    String.raw`\bgh[pousr]_[A-Za-z0-9]{30,}\b`,
    String.raw`\bgithub_pat_[A-Za-z0-9_]{22,}\b`,
    String.raw`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`,
    String.raw`(?<=aws_secret_access_key["']?\s*[=:]\s*["']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])`,
    String.raw`\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])`,
    String.raw`\bxox[abpr]-[A-Za-z0-9-]{10,}`,
    String.raw`https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}`,
    String.raw`\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}`,
    // A PEM block; if the END line is missing (truncated paste) the base64 body after BEGIN is taken.
    String.raw`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\:-]*)`,
    String.raw`(?<=\b[Bb]earer\s{1,4})[A-Za-z0-9._~+/-]{16,}=*`,
    String.raw`(?<=\bAuthorization:\s*Basic\s{1,4})[A-Za-z0-9+/]{12,}={0,2}`,
  ].join("|"),
  "g",
);

function detectSecrets(text: string, push: Push): void {
  SECRET_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = SECRET_RE.exec(text)) !== null) {
    let end = m.index + m[0].length;
    while (end > m.index && /\s/.test(text[end - 1]!)) end--; // PEM fallback may swallow trailing space
    push("INTERNAL_SECRET", m.index, end);
  }
}

// ---------------------------------------------------------------------------------------------- email
const EMAIL_RE =
  /(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-]|\.[A-Za-z0-9])/g;

function detectEmails(text: string, push: Push): void {
  if (text.indexOf("@") < 0) return;
  EMAIL_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = EMAIL_RE.exec(text)) !== null) push("EMAIL_ADDRESS", m.index, m.index + m[0].length);
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
const CARD_RE = /(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)/g;

function cardGroupsPlausible(raw: string): boolean {
  const groups = raw.split(/[ -]/);
  if (groups.length === 1) return true;
  const sizes = groups.map((g) => g.length).join(",");
  if (sizes === "4,6,5" || sizes === "4,6,4") return true; // Amex, Diners
  for (let i = 0; i < groups.length - 1; i++) if (groups[i]!.length !== 4) return false;
  return groups[groups.length - 1]!.length <= 4;
}

function detectCards(text: string, push: Push): void {
  CARD_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = CARD_RE.exec(text)) !== null) {
    const digits = m[0].replace(/[ -]/g, "");
    if (cardIssuerValid(digits) && luhnValid(digits) && cardGroupsPlausible(m[0]))
      push("CREDIT_CARD", m.index, m.index + m[0].length);
  }
}

// ---------------------------------------------------------------------------------------------- SSN
const SSN_RE = /(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])/g;
// Nine bare digits are an SSN only right after the words that say so.
const SSN_BARE_RE = /(?<=\b(?:ssn|SSN|social security(?: number| no\.?)?|Social Security(?: Number| No\.?)?)\W{0,4})(\d{3})(\d{2})(\d{4})(?!\w)/g;

function detectSsns(text: string, push: Push): void {
  let m: RegExpExecArray | null;
  SSN_RE.lastIndex = 0;
  while ((m = SSN_RE.exec(text)) !== null) {
    if (ssnValid(m[1]!, m[3]!, m[4]!)) push("US_SSN", m.index, m.index + m[0].length);
  }
  SSN_BARE_RE.lastIndex = 0;
  while ((m = SSN_BARE_RE.exec(text)) !== null) {
    if (ssnValid(m[1]!, m[2]!, m[3]!)) push("US_SSN", m.index, m.index + m[0].length);
  }
}

// ---------------------------------------------------------------------------------------------- IP
const IPV4_RE = /(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)/g;
// Needs two colons within the first groups, so ordinary words and times fail after a few characters.
const IPV6_RE = /(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]+(?:\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w]+)?(?![\w:])/g;
const VERSION_BEFORE_RE = /(?:version|ver\.?|release|build|v)\s*[=:]?\s*["']?$/i;

function detectIps(text: string, push: Push): void {
  let m: RegExpExecArray | null;
  IPV4_RE.lastIndex = 0;
  while ((m = IPV4_RE.exec(text)) !== null) {
    if (!ipValid(m[0])) continue;
    if (VERSION_BEFORE_RE.test(text.slice(Math.max(0, m.index - 12), m.index))) continue;
    push("IP_ADDRESS", m.index, m.index + m[0].length);
  }
  if (text.indexOf(":") < 0) return;
  IPV6_RE.lastIndex = 0;
  while ((m = IPV6_RE.exec(text)) !== null) {
    let v = m[0];
    while (v.endsWith(":") && !v.endsWith("::")) v = v.slice(0, -1);
    // Require some digits: "dead:beef:cafe::" style words are more often code than addresses.
    if (!/\d/.test(v) || !ipValid(v)) continue;
    push("IP_ADDRESS", m.index, m.index + v.length);
  }
}

// ---------------------------------------------------------------------------------------------- phone
// Candidates: an optional +/00, digits with single separators, optional (area) group; 7-15 digits.
const PHONE_RE = /(?<![\w+@/#$.-]|\d[ ])(?:\+|00)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:(?:[ .-]|\) ?| ?\()?\d{1,6}){1,6}(?![\w@/-]|[.,]\d|[ -]\d)/g;
const DATE_LIKE_RE = /^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$/;
const DATE_START_RE = /^\d{4}-\d{2}-\d{2}(?!\d)/;
const PHONE_CONTEXT_RE =
  /(?:phone|tel|telephone|mobile|cell|call|fax|sms|text|whatsapp|ring|dial|reach|contact|number|nr|no\.?|#)\s*(?:me|us|him|her|them)?\s*(?:at|on|:)?\s*$/i;
const NOT_PHONE_BEFORE_RE = /(?:order|invoice|ticket|id|account|acct|ref|reference|tracking|build|job|pid|port|#)\s*(?:number|no\.?|nr|id|:)?\s*[:#]?\s*$/i;
const NATIONAL_REGIONS: CountryCode[] = ["GB", "DE", "FR", "AU", "IN", "NL", "IT", "ES", "IE"];

function phoneValid(candidate: string): boolean {
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

function detectPhones(text: string, push: Push): void {
  PHONE_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = PHONE_RE.exec(text)) !== null) {
    const raw = m[0];
    let digits = 0;
    for (let i = 0; i < raw.length; i++) {
      const c = raw.charCodeAt(i);
      if (c >= 48 && c <= 57) digits++;
    }
    if (digits < 8 || digits > 15) continue;
    if (DATE_LIKE_RE.test(raw) || DATE_START_RE.test(raw)) continue;
    if (raw.indexOf(")") >= 0 && raw.indexOf("(") < 0) continue;
    if (/^\d+(?:\.\d+){2,}$/.test(raw)) continue; // dotted version strings and IPs
    const before = text.slice(Math.max(0, m.index - 24), m.index);
    const separated = /[^\d]/.test(raw);
    if (!separated && !PHONE_CONTEXT_RE.test(before)) continue; // a bare digit run needs a phone word
    if (!raw.startsWith("+") && NOT_PHONE_BEFORE_RE.test(before)) continue;
    if (phoneValid(raw)) push("PHONE_NUMBER", m.index, m.index + raw.length);
  }
}

/** Runs every enabled pattern detector over `text`, pushing raw (possibly overlapping) spans. */
export function detectPatterns(text: string, enabled: ReadonlySet<PiiEntity>, out: Span[]): void {
  const push: Push = (entity, start, end) => {
    out.push({ entity, start, end });
  };
  if (enabled.has("INTERNAL_SECRET")) detectSecrets(text, push);
  if (enabled.has("EMAIL_ADDRESS")) detectEmails(text, push);
  if (enabled.has("IBAN")) detectIbans(text, push);
  if (enabled.has("CREDIT_CARD")) detectCards(text, push);
  if (enabled.has("US_SSN")) detectSsns(text, push);
  if (enabled.has("IP_ADDRESS")) detectIps(text, push);
  if (enabled.has("PHONE_NUMBER")) detectPhones(text, push);
}
