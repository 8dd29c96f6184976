/**
 * The knowledge-base folder (KB_DIR) on disk: path confinement, reading, writing and walking.
 *
 * This is the knowledge base's own file adapter (style rule: only adapters touch `fs`); it lives beside the
 * knowledge base because nothing else uses it.
 *
 * Confinement: a client path is relative to KB_DIR (an absolute path is accepted only when it lies inside KB_DIR).
 * Any `..` segment is refused outright; then the lexical path must stay inside KB_DIR, and the real path (symlinks
 * resolved with realpath) must too. Names are at most 255 bytes, and a path written at most 1024, checked before the
 * disk is touched.
 *
 * Writes are staged: the content goes to a new hidden temporary file beside the target (opened with O_EXCL and
 * O_NOFOLLOW), which is renamed over the target only once the caller has indexed the content, so a failed upload
 * leaves no new file behind and an earlier version of the file intact. A target that is a symlink is refused, and
 * rename replaces a link planted meanwhile instead of following it.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { codeOf, InvalidRequestError, ServiceUnavailableError } from "../errors";

/**
 * Folders a directory ingest does not enter: dependencies and build output. Hidden entries (VCS data, editor state)
 * are not walked either. Each is reported in the ingest's `skipped`; a file uploaded or ingested there by name is
 * indexed all the same, and a directory ingest above it leaves it indexed while the file exists.
 */
const SKIP_DIRS = new Set(["node_modules", "vendor", "dist", "build", "target", "__pycache__", "venv"]);

/** Why a directory ingest does not enter `name`, or null when it does. */
export function walkSkipReason(name: string, isDirectory: boolean): string | null {
  if (name.startsWith(".")) return isDirectory ? "hidden folder (not walked)" : "hidden file (not walked)";
  if (isDirectory && SKIP_DIRS.has(name)) return "dependency or build-output folder (not walked)";
  return null;
}

/** File system errors that make one file unreadable without saying anything about the others. */
const FILE_GONE: Record<string, string> = {
  ENOENT: "file disappeared during the ingest",
  ENOTDIR: "file disappeared during the ingest",
  EACCES: "permission denied",
  EPERM: "permission denied",
};

function fileGone(error: unknown): string | null {
  return FILE_GONE[(error as NodeJS.ErrnoException)?.code ?? ""] ?? null;
}

/** UTF-8 decoding that refuses malformed input instead of writing U+FFFD in its place. */
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Files larger than this are not ingested (a knowledge base is text, not data dumps). */
export const MAX_FILE_BYTES = 5 * 1024 * 1024;

/** Longest file or folder name (NAME_MAX of common file systems), in UTF-8 bytes. */
export const MAX_NAME_BYTES = 255;
/**
 * Longest path written inside KB_DIR, in UTF-8 bytes: the source id, kept well within PATH_MAX and searchable as an
 * audit event's `target_id`.
 */
export const MAX_PATH_BYTES = 1024;
/** PATH_MAX (4096 bytes with its NUL) for the absolute path of a file written, its temporary name included. */
const MAX_ABSOLUTE_BYTES = 4095;
/** Bytes of a temporary file's name: `.kb-upload-` + 16 hex + `.tmp`. */
const TEMP_NAME_BYTES = 31;

/** Whether a string is well-formed UTF-16 (no unpaired surrogate): String.prototype.isWellFormed, from Node 20. */
export function isWellFormed(text: string): boolean {
  const native = (text as unknown as { isWellFormed?: () => boolean }).isWellFormed;
  return native ? native.call(text) : !/\p{Cs}/u.test(text);
}

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

/** A file written under a temporary name beside its target (see KbFiles.stage). */
export interface StagedFile extends KbPath {
  /** Move the content into place, replacing an earlier version of the file at once. */
  commit(): Promise<void>;
  /** Remove the temporary file and the folders created for it; an earlier version of the file is untouched. */
  discard(): Promise<void>;
}

export class KbFiles {
  private realRoot: string | null = null;

  constructor(readonly root: string) {}

  /** The real path of KB_DIR (created when missing), resolved once. */
  async rootReal(): Promise<string> {
    if (!this.realRoot) {
      try {
        await fsp.mkdir(this.root, { recursive: true });
        this.realRoot = await fsp.realpath(this.root);
      } catch (error) {
        // The server's setting, not the request: a 503 naming KB_DIR instead of a bare 500.
        throw new ServiceUnavailableError(
          `The knowledge-base folder (KB_DIR) cannot be used (${codeOf(error) || "error"}); an administrator must point KB_DIR at a writable folder.`,
          "kb_dir_unavailable",
        );
      }
    }
    return this.realRoot;
  }

  /**
   * Lexical checks only (the path need not exist): no NUL, well-formed Unicode, no `..` segment, inside KB_DIR, no
   * name longer than the file system takes. Returns the absolute lexical path and its source id.
   */
  async lexical(input: string): Promise<KbPath> {
    if (typeof input !== "string" || !input.trim()) throw badPath("`path` must be a non-empty string.");
    if (input.includes("\0")) throw badPath("`path` must not contain NUL characters.");
    if (!isWellFormed(input)) {
      throw badPath(
        "`path` must be well-formed Unicode: it contains an unpaired surrogate (\\ud800-\\udfff without its pair).",
      );
    }
    if (input.split(/[\\/]+/).includes("..")) throw badPath("`path` must not contain `..` segments.");
    const root = await this.rootReal();
    const lexicalRoot = path.resolve(this.root);
    const absolute = path.resolve(lexicalRoot, input);
    // An absolute path may name KB_DIR by its configured or its real location.
    const base = isInside(lexicalRoot, absolute) ? lexicalRoot : isInside(root, absolute) ? root : null;
    if (!base) throw badPath("`path` must be inside the knowledge-base directory (KB_DIR).");
    const inRoot = path.join(root, path.relative(base, absolute));
    const source = toSource(root, inRoot);
    for (const name of source.split("/")) {
      const bytes = Buffer.byteLength(name, "utf8");
      if (bytes > MAX_NAME_BYTES) {
        throw badPath(
          `\`path\` has a file or folder name of ${bytes} bytes; each name must be at most ${MAX_NAME_BYTES} bytes (UTF-8).`,
        );
      }
    }
    return { absolute: inRoot, source };
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
   * Stage `content` for `input`: write it to a hidden temporary file in the target's folder (creating missing
   * folders), to be renamed over the target by `commit()` or removed by `discard()`. The parent's real path must be
   * inside KB_DIR; the target must not be a symlink, a directory or another non-regular file. Every check runs
   * before anything is created; a check or write that fails removes what was created.
   */
  async stage(input: string, content: string): Promise<StagedFile> {
    const { absolute, source } = await this.lexical(input);
    const root = await this.rootReal();
    if (absolute === root) throw badPath("`path` must name a file.");
    const bytes = Buffer.byteLength(source, "utf8");
    if (bytes > MAX_PATH_BYTES) {
      throw badPath(
        `\`path\` is ${bytes} bytes; it must be at most ${MAX_PATH_BYTES} bytes (UTF-8) inside KB_DIR.`,
      );
    }
    if (Buffer.byteLength(absolute, "utf8") + 1 + TEMP_NAME_BYTES > MAX_ABSOLUTE_BYTES) {
      throw badPath(
        "`path` is too long: together with KB_DIR's own location it exceeds the file system's limit of 4096 bytes.",
      );
    }
    const parent = path.dirname(absolute);
    // Check the nearest existing ancestor before creating anything, so mkdir never runs through a symlink out.
    let probe = parent;
    while (!fs.existsSync(probe)) probe = path.dirname(probe);
    if (!isInside(root, await fsp.realpath(probe)))
      throw badPath("`path` resolves (through a symlink) outside KB_DIR.");
    if (!(await fsp.stat(probe)).isDirectory())
      throw badPath(`\`path\` runs through a file: ${toSource(root, probe)} is not a folder.`);
    // The first folder created (undefined when the parent existed): a failed upload removes what it created.
    const created = await fsp.mkdir(parent, { recursive: true });
    const removeCreated = async () => {
      if (!created) return;
      for (let dir = parent; isInside(created, dir); dir = path.dirname(dir)) {
        try {
          await fsp.rmdir(dir);
        } catch {
          return; // not empty (something else wrote into it meanwhile): it stays, and so do its parents
        }
        if (dir === created) return;
      }
    };
    let temp: string | null = null;
    try {
      const realParent = await fsp.realpath(parent);
      if (!isInside(root, realParent)) throw badPath("`path` resolves (through a symlink) outside KB_DIR.");
      const target = path.join(realParent, path.basename(absolute));
      const existing = await fsp.lstat(target).catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return null;
        throw error;
      });
      if (existing?.isSymbolicLink()) throw badPath("`path` is a symlink; refusing to write through it.");
      if (existing?.isDirectory()) throw badPath("`path` is a directory.");
      if (existing && !existing.isFile()) throw badPath("`path` names something other than a regular file.");
      temp = path.join(realParent, `.kb-upload-${crypto.randomBytes(8).toString("hex")}.tmp`);
      const handle = await fsp.open(
        temp,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
        0o644,
      );
      try {
        // A new version keeps the permissions of the file it replaces.
        if (existing) await handle.chmod(existing.mode & 0o7777);
        await handle.writeFile(content, "utf8");
      } finally {
        await handle.close();
      }
      const staged = temp;
      return {
        absolute: target,
        source: toSource(root, target),
        commit: () => fsp.rename(staged, target),
        async discard() {
          await fsp.rm(staged, { force: true });
          await removeCreated();
        },
      };
    } catch (error) {
      if (temp) await fsp.rm(temp, { force: true }).catch(() => undefined);
      await removeCreated();
      if ((error as NodeJS.ErrnoException).code === "ENAMETOOLONG")
        throw badPath("`path` is too long for the file system.");
      throw error;
    }
  }

  /**
   * Read a file as UTF-8, or the reason it is not ingested: too large, binary (contains NUL), not UTF-8, or gone or
   * unreadable by now (a file deleted or made unreadable after the walk listed it).
   */
  async readText(absolute: string): Promise<{ text: string } | { skip: string }> {
    let buffer: Buffer;
    try {
      const stat = await fsp.stat(absolute);
      if (stat.size > MAX_FILE_BYTES) return { skip: `larger than ${MAX_FILE_BYTES} bytes` };
      buffer = await fsp.readFile(absolute);
    } catch (error) {
      const reason = fileGone(error);
      if (reason) return { skip: reason };
      throw error;
    }
    if (buffer.includes(0)) return { skip: "binary file" };
    try {
      return { text: UTF8.decode(buffer) };
    } catch {
      return { skip: "not UTF-8" };
    }
  }

  /** Whether the source id names a regular file in KB_DIR now. */
  async isFile(source: string): Promise<boolean> {
    try {
      return (await fsp.stat(path.join(await this.rootReal(), source))).isFile();
    } catch {
      return false;
    }
  }

  /**
   * Every regular file under a directory (real paths inside KB_DIR). Hidden entries, SKIP_DIRS folders, and folders
   * or symlinks that cannot be read are not entered and are listed in `skipped` with the reason. Symlinks are
   * followed only while they resolve inside KB_DIR; each real directory is visited once (no loops).
   */
  async walk(directory: string): Promise<{ files: KbPath[]; skipped: { path: string; reason: string }[] }> {
    const root = await this.rootReal();
    const files: KbPath[] = [];
    const skipped: { path: string; reason: string }[] = [];
    const seen = new Set<string>();
    const visit = async (dir: string): Promise<void> => {
      if (seen.has(dir)) return;
      seen.add(dir);
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (error) {
        const reason = fileGone(error);
        if (!reason || dir === directory) throw error;
        skipped.push({ path: toSource(root, dir), reason: reason.replace("file", "folder") });
        return;
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const entry of entries) {
        const full = path.join(dir, entry.name);
        const hidden = entry.name.startsWith(".") ? walkSkipReason(entry.name, entry.isDirectory()) : null;
        if (hidden) {
          skipped.push({ path: toSource(root, full), reason: hidden });
          continue;
        }
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
          const stat = await fsp.stat(real).catch((error: unknown) => {
            if (fileGone(error)) return null;
            throw error;
          });
          if (!stat) {
            skipped.push({ path: toSource(root, full), reason: "broken symlink" });
            continue;
          }
          isDir = stat.isDirectory();
          isFile = stat.isFile();
        }
        if (isDir) {
          const reason = walkSkipReason(entry.name, true);
          if (reason) skipped.push({ path: toSource(root, full), reason });
          else await visit(real);
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
