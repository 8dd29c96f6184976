import { describe, expect, it } from "vitest";
import { createPiiEngine, type PiiEntity } from "../../../../service/lib/pii";
import { clearPhoneVerdicts } from "../../../../service/lib/pii/patterns";

// Pattern entities only: names off keeps these tests about the validated detectors.
const engine = createPiiEngine({ enabled: true, names: "off" });

function found(text: string): Array<[PiiEntity, string]> {
  return engine.detect(text).map((s) => [s.entity, text.slice(s.start, s.end)]);
}

describe("EMAIL_ADDRESS", () => {
  it("finds addresses in prose, headers and JSON", () => {
    expect(found("write to jane.doe+billing@example.co.uk.")).toEqual([
      ["EMAIL_ADDRESS", "jane.doe+billing@example.co.uk"],
    ]);
    expect(found('{"to":"ops@acme.io"}')).toEqual([["EMAIL_ADDRESS", "ops@acme.io"]]);
    expect(found("From: Megan <megan.fox@acme.io>")).toEqual([["EMAIL_ADDRESS", "megan.fox@acme.io"]]);
  });
  it("finds addresses written with %40 (URLs, logs) and \\u0040 (pasted JSON), as written", () => {
    expect(found("GET /search?email=john.smith%40example.com&page=2")).toEqual([
      ["EMAIL_ADDRESS", "john.smith%40example.com"],
    ]);
    expect(found('{"to":"sarah.connor\\u0040example.com"}')).toEqual([
      ["EMAIL_ADDRESS", "sarah.connor\\u0040example.com"],
    ]);
    // Not an address: an encoded @ without a domain, a percent-encoded path.
    expect(found("100%40 of them")).toEqual([]);
    expect(found("/files/a%40b")).toEqual([]);
  });
  it("finds internationalised addresses (RFC 6531 local parts, IDN domains and TLDs), whole", () => {
    expect(found("Schreib an zoë.müller@example.com bitte.")).toEqual([
      ["EMAIL_ADDRESS", "zoë.müller@example.com"],
    ]);
    expect(found("Kontakt: anna@müller.de, jürgen@bücher.example.")).toEqual([
      ["EMAIL_ADDRESS", "anna@müller.de"],
      ["EMAIL_ADDRESS", "jürgen@bücher.example"],
    ]);
    expect(found("邮件 用户@例子.广告 谢谢")).toEqual([["EMAIL_ADDRESS", "用户@例子.广告"]]);
    expect(found("почта иван@пример.рф и ivan@xn--e1afmkfd.xn--p1ai")).toEqual([
      ["EMAIL_ADDRESS", "иван@пример.рф"],
      ["EMAIL_ADDRESS", "ivan@xn--e1afmkfd.xn--p1ai"],
    ]);
    // CJK prose runs into an ASCII address without spaces: only the address is taken.
    expect(found("请联系john@example.com请回复")).toEqual([["EMAIL_ADDRESS", "john@example.com"]]);
    // Thai (also written without spaces), short and long prose around it: only the address.
    expect(found("ส่งไปที่john@example.comครับ")).toEqual([["EMAIL_ADDRESS", "john@example.com"]]);
    const thai = "ส่งไปที่john@example.comครับผมขอบคุณมากสำหรับความช่วยเหลือทั้งหมดนะครับ";
    expect(found(thai)).toEqual([["EMAIL_ADDRESS", "john@example.com"]]);
    // Latin letters with accents too long for a local part around an ASCII address: the ASCII address still counts.
    expect(found(`${"é".repeat(70)}x@example.com`)).toEqual([["EMAIL_ADDRESS", "x@example.com"]]);
    // An emoji before the address does not hide it.
    expect(found("😀john@example.com")).toEqual([["EMAIL_ADDRESS", "john@example.com"]]);
  });
  it("ignores package specifiers, decorators and bare @", () => {
    expect(found("npm i lodash@4.17.21 @types/node@20 and @Component()")).toEqual([]);
    expect(found("ping me @ noon")).toEqual([]);
  });
});

describe("PHONE_NUMBER", () => {
  it("gives the same verdict the second time, from the verdict cache, as the first", () => {
    const text = "call +1 (415) 555-0132 or 020 7946 0958, ticket 4155550199, build 1234567890";
    clearPhoneVerdicts();
    const first = found(text);
    expect(first).toEqual([
      ["PHONE_NUMBER", "+1 (415) 555-0132"],
      ["PHONE_NUMBER", "020 7946 0958"],
    ]);
    for (let i = 0; i < 3; i++) expect(found(text)).toEqual(first);
  });
  it("finds valid numbers in national and international formats", () => {
    for (const p of [
      "+1 (415) 555-0132",
      "(312) 555-0147",
      "415-555-0198",
      "+44 20 7946 0958",
      "020 7946 0958",
      "+49 30 901820",
      "+33 1 42 68 53 00",
      "+81 3-1234-5678",
      "06 12 34 56 78",
    ])
      expect(found(`call ${p} today`), p).toEqual([["PHONE_NUMBER", p]]);
  });
  it("takes an E.164 number in a log line as a phone, not a card", () => {
    expect(found("sms sent to=+4915112345678 template=2fa")).toEqual([["PHONE_NUMBER", "+4915112345678"]]);
  });
  it("takes a bare digit run only after a phone word", () => {
    expect(found("phone: 4155550132")).toEqual([["PHONE_NUMBER", "4155550132"]]);
    expect(found("Order #4155550132 was refunded")).toEqual([]);
    expect(found("id 4155550132")).toEqual([]);
  });
  it("rejects invalid numbers, timestamps, dates, versions and hashes", () => {
    for (const t of [
      "ts=1710498151234",
      "epoch 1710498151",
      "2024-03-15 10:22:35",
      "version 10.0.19045.3693",
      "commit 5053313562ab",
      "call 555-0132", // no area code: not a valid number
      "(123) 456-7890", // area codes never start with 1
      "sequence 4 8 15 16 23 42",
      "ISBN 978-0-13-468599-1",
    ])
      expect(found(t), t).toEqual([]);
  });
});

describe("CREDIT_CARD", () => {
  it("finds Luhn-valid numbers of known networks, spaced, dashed or plain", () => {
    expect(found("card 4532 5718 4225 5902 ok")).toEqual([["CREDIT_CARD", "4532 5718 4225 5902"]]);
    expect(found("card 4532-5718-4225-5902 ok")).toEqual([["CREDIT_CARD", "4532-5718-4225-5902"]]);
    expect(found("card 4532571842255902 ok")).toEqual([["CREDIT_CARD", "4532571842255902"]]);
    expect(found("amex 3782 915615 30972")).toEqual([["CREDIT_CARD", "3782 915615 30972"]]);
  });
  it("rejects a failing checksum, unknown prefixes and odd grouping", () => {
    expect(found("card 4111 1111 1111 1112")).toEqual([]);
    expect(found("id 1234567812345670")).toEqual([]);
    expect(found("4532 57 1842 255902")).toEqual([]);
    expect(found("ts 1710498151234")).toEqual([]);
  });
});

describe("US_SSN", () => {
  it("finds dashed and spaced numbers, and bare ones after 'SSN'", () => {
    expect(found("SSN 512-34-8890")).toEqual([["US_SSN", "512-34-8890"]]);
    expect(found("it is 423 81 5567.")).toEqual([["US_SSN", "423 81 5567"]]);
    expect(found("ssn: 512348890")).toEqual([["US_SSN", "512348890"]]);
  });
  it("applies area/group/serial rules and needs consistent separators", () => {
    for (const t of [
      "666-12-3456",
      "900-12-3456",
      "512-00-3456",
      "512-34-0000",
      "123-45-6789",
      "512-34 8890",
      "512348890",
    ])
      expect(found(t), t).toEqual([]);
  });
});

describe("IBAN", () => {
  it("finds grouped and compact IBANs and stops at the country's length", () => {
    expect(found("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX")).toEqual([
      ["IBAN", "DE89 3704 0044 0532 0130 00"],
    ]);
    expect(found("to NL91ABNA0417164300.")).toEqual([["IBAN", "NL91ABNA0417164300"]]);
  });
  it("rejects a wrong check digit", () => {
    expect(found("IBAN DE88 3704 0044 0532 0130 00")).toEqual([]);
  });
});

describe("IP_ADDRESS", () => {
  it("finds v4 (with port or CIDR) and v6", () => {
    expect(found("from 203.0.113.77:443")).toEqual([["IP_ADDRESS", "203.0.113.77"]]);
    expect(found("allow 192.168.10.0/24;")).toEqual([["IP_ADDRESS", "192.168.10.0"]]);
    expect(found("peer 2001:db8:85a3::8a2e:370:7334 up")).toEqual([
      ["IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"],
    ]);
    expect(found("[2606:4700:4700::1111]:443")).toEqual([["IP_ADDRESS", "2606:4700:4700::1111"]]);
  });
  it("finds v4 after words that end like a version keyword (server, resolver, dev, env, observer)", () => {
    for (const [t, ip] of [
      ["Server 203.0.113.42 is down", "203.0.113.42"],
      ["server: 198.51.100.7", "198.51.100.7"],
      ["DNS resolver 8.8.4.4", "8.8.4.4"],
      ["ssh dev 10.20.30.40", "10.20.30.40"],
      ["export env 10.20.30.40", "10.20.30.40"],
      ["observer 203.0.113.42", "203.0.113.42"],
      ["rebuild 10.1.2.3", "10.1.2.3"],
    ])
      expect(found(t), t).toEqual([["IP_ADDRESS", ip]]);
  });
  it("rejects versions, out-of-range octets, times, MACs and C++ scopes", () => {
    for (const t of [
      "version 1.2.3.4",
      "v1.2.3.4",
      "ver. 1.2.3.4",
      "build=10.0.19045.1",
      "release: 4.3.2.1",
      'version "1.2.3.4"',
      "999.1.1.1",
      "10:30:45",
      "00:1A:2B:3C:4D:5E",
      "std::vector<int>",
      "1.2.3",
    ])
      expect(found(t), t).toEqual([]);
  });
});

describe("INTERNAL_SECRET", () => {
  const secrets: Array<[string, string]> = [
    ["OpenAI", "sk-proj-wSNp6-37bsftf-qmAjCkMfcEvIGclF1RZCQ2HXAVKiklU_W1T3BlbkFJ4e13N32i1Yf1"],
    ["OpenAI legacy", "sk-qHuTxnnoDC6ajzumsJ9D7PpyGZO6gqr2DHqpIckQtK1N62Xe"],
    ["Anthropic", "sk-ant-api03-_2xraQisjX_q20qcQPdClJE_uSSoxrQ_9q9wRQjk6nkLQnAZcKkiZ8rQaSZjg2EHZNXrJxkPAA"],
    ["GitHub classic", "ghp_30NoEuAnibNrZfJvVdmZUS4Y1ATPN8xT2p9S"],
    ["GitHub OAuth", "gho_YGiUxeUo3DIrDtHmD4KzPdQF1o5qZJ1aZYTQ"],
    ["GitHub fine-grained", "github_pat_XYCCNJoifJynfgkzLHsnCo_yobMC99kme6qOpBUaIaIorJZDZarFjPYBWUAUd5HN7"],
    ["AWS key id", "AKIAI52RYAPUZFYPQ3DW"],
    ["AWS STS key id", "ASIA6X3A7MXDLH5A4JMX"],
    ["Google", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"],
    ["Slack", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"],
    [
      "JWT",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
  ];
  for (const [name, secret] of secrets)
    it(`finds ${name} keys`, () => {
      expect(found(`key=${secret} end`)).toEqual([["INTERNAL_SECRET", secret]]);
    });
  it("takes only the token after Bearer, and the AWS secret after its key name", () => {
    expect(found("Authorization: Bearer abcDEF123456ghiJKL789")).toEqual([
      ["INTERNAL_SECRET", "abcDEF123456ghiJKL789"],
    ]);
    const aws = "LMcPDQXswSKDuwVH+Idk+qn6KK+jpz885abcdEFG";
    expect(found(`aws_secret_access_key = ${aws}`)).toEqual([["INTERNAL_SECRET", aws]]);
  });
  it("takes a whole PEM private key block, and a truncated one", () => {
    const pem =
      "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\nabc+/==\n-----END RSA PRIVATE KEY-----";
    expect(found(`key:\n${pem}\nmore`)).toEqual([["INTERNAL_SECRET", pem]]);
    expect(found("-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJ")).toEqual([
      ["INTERNAL_SECRET", "-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJ"],
    ]);
  });
  it("ignores prose that merely resembles key formats", () => {
    for (const t of [
      "use sk-learn-based-pipelines-for-preprocessing here",
      "The Bearer token scheme (RFC 6750)",
      "set sk-... in .env",
      "AKIA is the prefix of AWS key ids",
    ])
      expect(found(t), t).toEqual([]);
  });

  it("a long run of 'sk-' scans in linear time, and a key at its end is still found", () => {
    // With look-aheads each "sk-" rescanned the rest of the run: 180 KB took 7 s, this would take minutes.
    const run = "sk-".repeat(200_000);
    expect(found(run)).toEqual([]);
    const key = "sk-qHuTxnnoDC6ajzumsJ9D7PpyGZO6gqr2DHqpIckQtK1N62Xe";
    // A key inside the run joins it (one token of key characters), so the whole run is the secret.
    expect(found(`${run.slice(0, 3000)}${key} and more`)).toEqual([
      ["INTERNAL_SECRET", `${run.slice(0, 3000)}${key}`],
    ]);
    expect(found(`${run.slice(0, 3000)} ${key}`)).toEqual([["INTERNAL_SECRET", key]]);
  }, 20_000);
});

describe("hard negatives", () => {
  it("finds nothing in UUIDs, SHAs, versions, timestamps, hex ids and arithmetic", () => {
    const text = [
      "request 3f2b8c1e-9a4d-4e7f-b2c6-1d8e9f0a7b3c",
      "commit 5f3a9c2e1b7d04c88a1b2c3d4e5f6a7b8c9d0e1f",
      "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
      "numpy==1.26.4 scikit-learn==1.4.1.post1 v2.14.3",
      "2024-03-15T10:22:31.512Z 1710498151 1710498151234",
      "ORD-2024-118822 INV-2024-000871 0x7ffd5e8c 0xdeadbeef",
      "123 * 456 + 789 = 56877; 1,048,576; 4111 + 2222 * 3",
    ].join("\n");
    expect(found(text)).toEqual([]);
  });
});

describe("adversarial input", () => {
  it("handles long digit runs, long dotted domains and unterminated PEM blocks (no catastrophic backtracking)", () => {
    const digits = "9".repeat(100_000);
    expect(found(`x ${digits} y`)).toEqual([]);
    const spaced = Array.from({ length: 20_000 }, (_, i) => String(i % 10)).join(" ");
    expect(found(spaced).filter(([e]) => e === "PHONE_NUMBER")).toEqual([]);
    const dotted = "a@" + "b.".repeat(50_000) + "1";
    expect(found(dotted)).toEqual([]);
    const pems = "-----BEGIN PRIVATE KEY-----\n!!\n".repeat(2_000);
    expect(found(pems).length).toBe(2_000);
  });
});
