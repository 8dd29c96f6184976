/**
 * The knowledge-base folder (KB_DIR) on disk: path confinement, reading, writing and walking.
 *
 * This is the knowledge base's own file adapter (style rule: only adapters touch `fs`); it lives beside the
 * knowledge base because nothing else uses it.
 *
 * Confinement: a client path is relative to KB_DIR (an absolute path is accepted only when it lies inside KB_DIR).
 * Any `..` segment is refused outright; then the lexical path must stay inside KB_DIR, and the real path (symlinks
 * resolved with realpath) must too. Writes open the file with O_NOFOLLOW, so a symlink planted between the check
 * and the write is not followed.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { InvalidRequestError } from "../errors";

/** Directories never walked: VCS data, dependencies, build output. Hidden entries are skipped too. */
const SKIP_DIRS = new Set(["node_modules", "vendor", "dist", "build", "target", "__pycache__", "venv"]);

/** Files larger than this are not ingested (a knowledge base is text, not data dumps). */
export const MAX_FILE_BYTES = 5 * 1024 * 1024;

export interface KbPath {
  /** Absolute real path (symlinks resolved). */
  absolute: string;
  /** Path relative to the real KB_DIR, POSIX separators: the source id. */
  source: string;
}

function isInside(root: string, candidate: string): boolean {
  const rel = path.relative(root, candidate);
  return rel === "" || (!rel.startsWith(`..${path.sep}`) && rel !== ".." && !path.isAbsolute(rel));
}

function toSource(root: string, absolute: string): string {
  return path.relative(root, absolute).split(path.sep).join("/");
}

function badPath(message: string): InvalidRequestError {
  return new InvalidRequestError(message, "invalid_path", "path");
}

export class KbFiles {
  private realRoot: string | null = null;

  constructor(readonly root: string) {}

  /** The real path of KB_DIR (created when missing), resolved once. */
  async rootReal(): Promise<string> {
    if (!this.realRoot) {
      await fsp.mkdir(this.root, { recursive: true });
      this.realRoot = await fsp.realpath(this.root);
    }
    return this.realRoot;
  }

  /**
   * Lexical checks only (the path need not exist): no NUL, no `..` segment, inside KB_DIR. Returns the absolute
   * lexical path and its source id.
   */
  async lexical(input: string): Promise<KbPath> {
    if (typeof input !== "string" || !input.trim()) throw badPath("`path` must be a non-empty string.");
    if (input.includes("\0")) throw badPath("`path` must not contain NUL characters.");
    if (input.split(/[\\/]+/).includes("..")) throw badPath("`path` must not contain `..` segments.");
    const root = await this.rootReal();
    const lexicalRoot = path.resolve(this.root);
    const absolute = path.resolve(lexicalRoot, input);
    // An absolute path may name KB_DIR by its configured or its real location.
    const base = isInside(lexicalRoot, absolute) ? lexicalRoot : isInside(root, absolute) ? root : null;
    if (!base) throw badPath("`path` must be inside the knowledge-base directory (KB_DIR).");
    const inRoot = path.join(root, path.relative(base, absolute));
    return { absolute: inRoot, source: toSource(root, inRoot) };
  }

  /** An existing file or directory inside KB_DIR, symlinks resolved; 400 when missing or resolving outside. */
  async existing(input: string): Promise<KbPath & { isDirectory: boolean }> {
    const { absolute } = await this.lexical(input);
    const root = await this.rootReal();
    let real: string;
    try {
      real = await fsp.realpath(absolute);
    } catch {
      throw badPath(`No such file or directory in KB_DIR: ${input}`);
    }
    if (!isInside(root, real)) throw badPath("`path` resolves (through a symlink) outside KB_DIR.");
    const stat = await fsp.stat(real);
    return { absolute: real, source: toSource(root, real), isDirectory: stat.isDirectory() };
  }

  /**
   * Write `content` to `input` (creating parent folders). The parent's real path must be inside KB_DIR and the
   * file itself must not be a symlink.
   */
  async write(input: string, content: string): Promise<KbPath> {
    const { absolute } = await this.lexical(input);
    const root = await this.rootReal();
    if (absolute === root) throw badPath("`path` must name a file.");
    const parent = path.dirname(absolute);
    // Check the nearest existing ancestor before creating anything, so mkdir never runs through a symlink out.
    let probe = parent;
    while (!fs.existsSync(probe)) probe = path.dirname(probe);
    if (!isInside(root, await fsp.realpath(probe)))
      throw badPath("`path` resolves (through a symlink) outside KB_DIR.");
    await fsp.mkdir(parent, { recursive: true });
    const realParent = await fsp.realpath(parent);
    if (!isInside(root, realParent)) throw badPath("`path` resolves (through a symlink) outside KB_DIR.");
    const target = path.join(realParent, path.basename(absolute));
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(
        target,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
        0o644,
      );
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ELOOP") throw badPath("`path` is a symlink; refusing to write through it.");
      if (code === "EISDIR") throw badPath("`path` is a directory.");
      throw error;
    }
    try {
      await handle.writeFile(content, "utf8");
    } finally {
      await handle.close();
    }
    return { absolute: target, source: toSource(root, target) };
  }

  /** Read a file as UTF-8; null when it is too large or binary (contains NUL). */
  async readText(absolute: string): Promise<{ text: string } | { skip: string }> {
    const stat = await fsp.stat(absolute);
    if (stat.size > MAX_FILE_BYTES) return { skip: `larger than ${MAX_FILE_BYTES} bytes` };
    const buffer = await fsp.readFile(absolute);
    if (buffer.includes(0)) return { skip: "binary file" };
    return { text: buffer.toString("utf8") };
  }

  /**
   * Every regular file under a directory (real paths inside KB_DIR), skipping hidden entries and SKIP_DIRS.
   * Symlinks are followed only while they resolve inside KB_DIR; each real directory is visited once (no loops).
   */
  async walk(directory: string): Promise<{ files: KbPath[]; skipped: { path: string; reason: string }[] }> {
    const root = await this.rootReal();
    const files: KbPath[] = [];
    const skipped: { path: string; reason: string }[] = [];
    const seen = new Set<string>();
    const visit = async (dir: string): Promise<void> => {
      if (seen.has(dir)) return;
      seen.add(dir);
      const entries = await fsp.readdir(dir, { withFileTypes: true });
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const entry of entries) {
        if (entry.name.startsWith(".")) continue;
        const full = path.join(dir, entry.name);
        let real = full;
        let isDir = entry.isDirectory();
        let isFile = entry.isFile();
        if (entry.isSymbolicLink()) {
          try {
            real = await fsp.realpath(full);
          } catch {
            skipped.push({ path: toSource(root, full), reason: "broken symlink" });
            continue;
          }
          if (!isInside(root, real)) {
            skipped.push({ path: toSource(root, full), reason: "symlink resolves outside KB_DIR" });
            continue;
          }
          const stat = await fsp.stat(real);
          isDir = stat.isDirectory();
          isFile = stat.isFile();
        }
        if (isDir) {
          if (!SKIP_DIRS.has(entry.name)) await visit(real);
        } else if (isFile && !seen.has(real)) {
          seen.add(real);
          files.push({ absolute: real, source: toSource(root, real) });
        }
      }
    };
    await visit(directory);
    return { files, skipped };
  }
}
