/**
 * Which files the knowledge base ingests, and how each is chunked. Prose and Markdown are documents; everything
 * else listed is source or config, chunked as plain text by lines and tokens (every line is indexed, unlike
 * Relay's AST chunker, which indexes only top-level functions/classes and a 20-line header).
 */
import path from "node:path";
import type { DocumentKind } from "../lib/chunking";

const MARKDOWN = new Set([".md", ".markdown", ".mdx"]);

const TEXT = new Set([
  // prose
  ".txt",
  ".rst",
  ".adoc",
  // code
  ".ts",
  ".tsx",
  ".mts",
  ".cts",
  ".js",
  ".jsx",
  ".mjs",
  ".cjs",
  ".py",
  ".go",
  ".java",
  ".kt",
  ".kts",
  ".scala",
  ".rs",
  ".rb",
  ".c",
  ".h",
  ".cc",
  ".cpp",
  ".cxx",
  ".hpp",
  ".hh",
  ".cs",
  ".php",
  ".swift",
  ".m",
  ".lua",
  ".pl",
  ".r",
  ".ex",
  ".exs",
  ".erl",
  ".hs",
  ".clj",
  ".dart",
  ".vue",
  ".svelte",
  ".html",
  ".css",
  ".scss",
  ".sql",
  ".graphql",
  ".proto",
  // shell and config
  ".sh",
  ".bash",
  ".zsh",
  ".ps1",
  ".yaml",
  ".yml",
  ".json",
  ".toml",
  ".ini",
  ".cfg",
  ".conf",
  ".tf",
  ".hcl",
  ".xml",
]);

/** Extension-less files that are text by convention. */
const TEXT_NAMES = new Set(["dockerfile", "makefile", "readme", "license", "changelog", "jenkinsfile"]);

/** The chunking kind for a file name, or null when the type is not supported. */
export function documentKind(fileName: string): DocumentKind | null {
  const base = path.basename(fileName).toLowerCase();
  const ext = path.extname(base);
  if (MARKDOWN.has(ext)) return "markdown";
  if (TEXT.has(ext) || TEXT_NAMES.has(base)) return "text";
  return null;
}

/** For error messages: the accepted extensions. */
export const SUPPORTED_EXTENSIONS: readonly string[] = [...MARKDOWN, ...TEXT];
