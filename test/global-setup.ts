/**
 * Process-level tests run the compiled service (dist/). `npm test` builds it before vitest; when vitest is run on
 * its own and dist is missing or older than the sources, build it here once.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

export default function setup(): void {
  const root = path.resolve(__dirname, "..");
  const main = path.join(root, "dist/service/main.js");
  const stale = !fs.existsSync(main) || fs.statSync(main).mtimeMs < newestMtime(path.join(root, "service"));
  if (stale) {
    execFileSync(
      process.execPath,
      [path.join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
      {
        cwd: root,
        stdio: "inherit",
      },
    );
  }
}
