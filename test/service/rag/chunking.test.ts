import { describe, expect, it } from "vitest";
import { chunkDocument, countTokens, splitMarkdownSections } from "../../../service/lib/chunking";

const sentence = (i: number) =>
  `Sentence number ${i} explains how the proxy handles request ${i} in detail. `;
const prose = (n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => sentence(from + i))
    .join("")
    .trim();

describe("splitMarkdownSections", () => {
  it("splits on ATX headings with a heading path, and ignores headings inside fenced code", () => {
    const md = [
      "# Guide",
      "Intro text.",
      "## Install",
      "Run the installer.",
      "```sh",
      "# not a heading, a shell comment",
      "```",
      "### Linux",
      "apt-get install it.",
      "## Usage",
      "Call it.",
    ].join("\n");
    const sections = splitMarkdownSections(md);
    expect(sections.map((s) => s.heading)).toEqual([
      "Guide",
      "Guide > Install",
      "Guide > Install > Linux",
      "Guide > Usage",
    ]);
    expect(sections[1].text).toContain("# not a heading, a shell comment");
    expect(sections.map((s) => s.text).join("")).toBe(md);
  });

  it("splits on setext headings (=== and --- under a one-line paragraph), not on rules, lists or code", () => {
    const md = [
      "Guide",
      "=====",
      "Intro text.",
      "",
      "Install",
      "-------",
      "Run the installer.",
      "",
      "---",
      "",
      "- a list item",
      "---",
      "```",
      "code",
      "---",
      "```",
      "",
      "Usage",
      "=====",
      "Call it.",
    ].join("\r\n");
    const sections = splitMarkdownSections(md);
    expect(sections.map((s) => s.heading)).toEqual(["Guide", "Guide > Install", "Usage"]);
    expect(sections[1].text.startsWith("Install\r\n-------")).toBe(true);
    expect(sections[1].text).toContain("- a list item");
    expect(sections.map((s) => s.text).join("")).toBe(md);
  });
});

describe("chunkDocument", () => {
  const opts = { chunkTokens: 64, overlapTokens: 16 };

  it("keeps every chunk within the token bound", () => {
    const chunks = chunkDocument(prose(60), "text", opts);
    expect(chunks.length).toBeGreaterThan(5);
    for (const c of chunks) {
      expect(countTokens(c.text)).toBeLessThanOrEqual(64);
      expect(c.tokens).toBe(countTokens(c.text));
    }
    expect(chunks.map((c) => c.index)).toEqual(chunks.map((_, i) => i));
  });

  it("repeats the end of each chunk at the start of the next (overlap), and covers the whole text", () => {
    const text = prose(40);
    const chunks = chunkDocument(text, "text", opts);
    for (let i = 1; i < chunks.length; i++) {
      const prevWords = chunks[i - 1].text.split(/\s+/);
      const nextWords = chunks[i].text.split(/\s+/);
      // The first few words of chunk i are the last words of chunk i-1.
      const head = nextWords.slice(0, 3).join(" ");
      expect(prevWords.join(" ")).toContain(head);
      const shared = countTokens(head);
      expect(shared).toBeLessThanOrEqual(16);
    }
    // Every sentence survives in some chunk.
    for (let i = 0; i < 40; i++) {
      expect(chunks.some((c) => c.text.includes(`Sentence number ${i} `))).toBe(true);
    }
  });

  it("without overlap, chunks follow each other without repeating text, and the tail is kept", () => {
    const text = prose(30);
    const chunks = chunkDocument(text, "text", { chunkTokens: 64, overlapTokens: 0 });
    const norm = (s: string) => s.replace(/\s+/g, " ");
    const allButLast = chunks
      .slice(0, -1)
      .map((c) => c.text)
      .join(" ");
    expect(norm(text).startsWith(norm(allButLast))).toBe(true);
    // The text ends in a short remainder; it is not dropped as a tiny chunk but kept in a full-size last chunk.
    expect(chunks.at(-1)!.text.endsWith("request 29 in detail.")).toBe(true);
    expect(chunks.at(-1)!.text.length).toBeGreaterThanOrEqual(50);
  });

  it("splits Markdown on headings first: no chunk spans two sections, each carries its heading", () => {
    const md = `# Alpha\n\n${prose(3)}\n\n# Beta\n\n${prose(3, 100)}\n`;
    const chunks = chunkDocument(md, "markdown", { chunkTokens: 256, overlapTokens: 32 });
    expect(chunks).toHaveLength(2);
    expect(chunks[0].heading).toBe("Alpha");
    expect(chunks[0].text).not.toContain("Beta");
    expect(chunks[1].heading).toBe("Beta");
    expect(chunks[1].text.startsWith("# Beta")).toBe(true);
    // As plain text the same file is one chunk spanning both.
    expect(chunkDocument(md, "text", { chunkTokens: 256, overlapTokens: 32 })).toHaveLength(1);
  });

  it("skips chunks shorter than 50 characters", () => {
    const md = `# Title\n\nShort.\n\n## Real section\n\n${prose(2)}\n\n## Tiny\n\nok\n`;
    const chunks = chunkDocument(md, "markdown", { chunkTokens: 256, overlapTokens: 0 });
    expect(chunks).toHaveLength(1);
    expect(chunks[0].heading).toBe("Title > Real section");
    expect(chunks[0].index).toBe(0);
    expect(chunkDocument("tiny file", "text", opts)).toEqual([]);
  });

  it("prefers to end a chunk at a line break", () => {
    const lines = Array.from({ length: 30 }, (_, i) => `line ${i}: ${"word ".repeat(6).trim()}`).join("\n");
    const chunks = chunkDocument(lines, "text", { chunkTokens: 64, overlapTokens: 0 });
    for (const c of chunks) expect(c.text).toMatch(/word$/);
  });

  it("cuts a word longer than a chunk (minified code) and treats special-token strings as text", () => {
    const blob = "x".repeat(5000);
    const chunks = chunkDocument(`start <|endoftext|> ${blob}`, "text", opts);
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) expect(countTokens(c.text)).toBeLessThanOrEqual(64);
    expect(chunks[0].text).toContain("<|endoftext|>");
  });

  it("keeps chunks within chunk_tokens for scripts with several tokens per character (CJK, emoji, rare CJK)", () => {
    const texts = {
      cjk: "知识库检索增强生成系统需要将文档切分为适当大小的片段以便嵌入模型处理".repeat(60),
      emoji: "🧪🚀🔥💡".repeat(750),
      rareCjk: "𠀀𠀁𠀂𠀃𠀄𠀅".repeat(500),
    };
    for (const [name, text] of Object.entries(texts)) {
      const chunks = chunkDocument(text, "text", { chunkTokens: 256, overlapTokens: 32 });
      expect(chunks.length, name).toBeGreaterThan(1);
      for (const c of chunks) expect(countTokens(c.text), name).toBeLessThanOrEqual(256);
      // Nothing lost: the chunks, overlaps aside, cover the text (each character appears in some chunk in order).
      expect(chunks[0].text.startsWith(text.slice(0, 10)), name).toBe(true);
      expect(text.endsWith(chunks[chunks.length - 1].text.slice(-10)), name).toBe(true);
    }
  });

  it("strips a UTF-8 byte-order mark, so the first Markdown heading is still a heading", () => {
    const md =
      "\uFEFF# Install Guide\n\nThis section explains in detail how to install the product on a Linux server.\n\n" +
      "## Linux\n\nRun the installer script with sudo privileges on the target host machine please.\n";
    const chunks = chunkDocument(md, "markdown", { chunkTokens: 256, overlapTokens: 32 });
    expect(chunks.map((c) => c.heading)).toEqual(["Install Guide", "Install Guide > Linux"]);
    expect(chunks[0].text.startsWith("# Install Guide")).toBe(true);
  });
});
