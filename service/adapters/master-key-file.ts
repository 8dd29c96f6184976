/**
 * The embedded default's master key: generated once, stored in `<dataDir>/master-key` with mode 0600, reused on
 * every later start. Production sets PROXY_MASTER_KEY instead (the Pulumi program generates and keeps it).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export function ensureMasterKeyFile(dataDir: string): { key: string; file: string; created: boolean } {
  const file = path.join(dataDir, "master-key");
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    const key = fs.readFileSync(file, "utf8").trim();
    if (key.length >= 32) {
      fs.chmodSync(file, 0o600);
      return { key, file, created: false };
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const key = `sk-master-${crypto.randomBytes(32).toString("base64url")}`;
  // wx: never overwrite a key another process wrote in the meantime.
  try {
    fs.writeFileSync(file, `${key}\n`, { mode: 0o600, flag: "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return ensureMasterKeyFile(dataDir);
    throw error;
  }
  return { key, file, created: true };
}
