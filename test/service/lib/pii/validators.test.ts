import { describe, expect, it } from "vitest";
import {
  cardIssuerValid,
  ibanValid,
  ipValid,
  luhnValid,
  ssnValid,
} from "../../../../service/lib/pii/validators";

describe("luhnValid", () => {
  it("accepts checksum-valid numbers and rejects a one-digit change", () => {
    expect(luhnValid("4111111111111111")).toBe(true);
    expect(luhnValid("79927398713")).toBe(true);
    expect(luhnValid("378282246310005")).toBe(true);
    expect(luhnValid("4111111111111112")).toBe(false);
    expect(luhnValid("79927398710")).toBe(false);
  });
  it("rejects empty and non-digit input", () => {
    expect(luhnValid("")).toBe(false);
    expect(luhnValid("4111-1111")).toBe(false);
  });
});

describe("cardIssuerValid", () => {
  it("knows the networks' prefixes and lengths", () => {
    expect(cardIssuerValid("4111111111111111")).toBe(true); // Visa 16
    expect(cardIssuerValid("5555555555554444")).toBe(true); // Mastercard
    expect(cardIssuerValid("2223003122003222")).toBe(true); // Mastercard 2-series
    expect(cardIssuerValid("378282246310005")).toBe(true); // Amex 15
    expect(cardIssuerValid("6011111111111117")).toBe(true); // Discover
    expect(cardIssuerValid("3530111333300000")).toBe(true); // JCB
    expect(cardIssuerValid("37828224631000")).toBe(false); // Amex with 14 digits
    expect(cardIssuerValid("1234567812345670")).toBe(false); // no network starts with 1
    expect(cardIssuerValid("9999999999999995")).toBe(false);
  });
});

describe("ssnValid", () => {
  it("accepts a well-formed number", () => {
    expect(ssnValid("512", "34", "8890")).toBe(true);
  });
  it("rejects area 000, 666 and 900-999", () => {
    expect(ssnValid("000", "12", "3456")).toBe(false);
    expect(ssnValid("666", "12", "3456")).toBe(false);
    expect(ssnValid("900", "12", "3456")).toBe(false);
    expect(ssnValid("999", "12", "3456")).toBe(false);
    expect(ssnValid("899", "12", "3456")).toBe(true);
  });
  it("rejects group 00 and serial 0000", () => {
    expect(ssnValid("512", "00", "3456")).toBe(false);
    expect(ssnValid("512", "34", "0000")).toBe(false);
  });
  it("rejects published example numbers", () => {
    expect(ssnValid("123", "45", "6789")).toBe(false);
    expect(ssnValid("078", "05", "1120")).toBe(false);
    expect(ssnValid("219", "09", "9999")).toBe(false);
  });
});

describe("ibanValid", () => {
  it("accepts registry examples from several countries", () => {
    for (const iban of [
      "GB82WEST12345698765432",
      "DE89370400440532013000",
      "FR1420041010050500013M02606",
      "NL91ABNA0417164300",
      "CH9300762011623852957",
      "BE68539007547034",
      "NO9386011117947",
    ])
      expect(ibanValid(iban), iban).toBe(true);
  });
  it("rejects a wrong check digit, a wrong length and an unknown country", () => {
    expect(ibanValid("GB82WEST12345698765433")).toBe(false);
    expect(ibanValid("DE8937040044053201300")).toBe(false);
    expect(ibanValid("ZZ82WEST12345698765432")).toBe(false);
  });
});

describe("ipValid", () => {
  it("parses v4 and v6", () => {
    expect(ipValid("203.0.113.45")).toBe(true);
    expect(ipValid("2001:db8::8a2e:370:7334")).toBe(true);
    expect(ipValid("fe80::1%eth0")).toBe(true);
    expect(ipValid("256.1.1.1")).toBe(false);
    expect(ipValid("1.2.3")).toBe(false);
    expect(ipValid("10:30:45")).toBe(false);
  });
  it("does not report loopback, unspecified and broadcast addresses", () => {
    for (const a of ["127.0.0.1", "0.0.0.0", "255.255.255.255", "::", "::1"])
      expect(ipValid(a), a).toBe(false);
  });
});
