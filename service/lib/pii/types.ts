/** Entity types the PII engine detects. */
export const PII_ENTITIES = [
  "EMAIL_ADDRESS",
  "PHONE_NUMBER",
  "CREDIT_CARD",
  "US_SSN",
  "IBAN",
  "IP_ADDRESS",
  "INTERNAL_SECRET",
  "PERSON",
  "LOCATION",
] as const;

export type PiiEntity = (typeof PII_ENTITIES)[number];

/** Entities found by the name/place detectors. */
const NAME_ENTITIES: readonly PiiEntity[] = ["PERSON", "LOCATION"];

/** Entities found by validated patterns: every other one. */
export const PATTERN_ENTITIES: readonly PiiEntity[] = PII_ENTITIES.filter((e) => !NAME_ENTITIES.includes(e));

/** One detected entity: `text.slice(start, end)` is the value. */
export interface Span {
  entity: PiiEntity;
  start: number;
  end: number;
}

/** Name/place detector: the fast gazetteer (default), compromise's NER (slower), or none. */
export type NamesMode = "gazetteer" | "compromise" | "off";

export interface PiiOptions {
  /** Global switch; false makes every session a pass-through. */
  enabled: boolean;
  /** PERSON/LOCATION detector. Default "gazetteer" (see names.ts for the measurements behind the choice). */
  names: NamesMode;
  /** Per-entity switches; an entity missing here is on. */
  entities?: Partial<Record<PiiEntity, boolean>>;
  /** Values never scrubbed, compared case-insensitively with the whole detected value. */
  allowList?: readonly string[];
}

export type PiiCounts = Record<PiiEntity, number>;
