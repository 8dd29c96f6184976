import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { lockDataDir, StartupError } from "../../../service/lib/startup";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llmp-lock-"));
const lockFile = path.join(dir, "llm-proxy.lock");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("lockDataDir: one embedded instance per DATA_DIR", () => {
  it("takes the lock, and releases it", () => {
    const release = lockDataDir(dir);
    expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(process.pid));
    release();
    expect(fs.existsSync(lockFile)).toBe(false);
  });

  it("refuses while another live node process holds it, naming the directory and the pid", async () => {
    const holder = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"], { stdio: "ignore" });
    try {
      fs.writeFileSync(lockFile, `${holder.pid}\n`);
      let thrown: unknown;
      try {
        lockDataDir(dir);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(StartupError);
      expect((thrown as Error).message).toContain(
        `${dir} is in use by another llm-proxy (pid ${holder.pid})`,
      );
      expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(holder.pid)); // left alone
    } finally {
      holder.kill("SIGKILL");
      fs.rmSync(lockFile, { force: true });
    }
  });

  it("takes over a lock whose content is not a pid (no instance writes one: the pid is in before the lock exists)", () => {
    fs.writeFileSync(lockFile, "garbage");
    const release = lockDataDir(dir);
    expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(process.pid));
    release();
    expect(fs.readdirSync(dir)).toEqual([]); // no temporary file left either
  });

  it("takes over a lock left by a process that is gone", () => {
    const gone = spawnSync(process.execPath, [
      "-e",
      "process.stdout.write(String(process.pid))",
    ]).stdout.toString();
    fs.writeFileSync(lockFile, `${gone}\n`);
    const release = lockDataDir(dir);
    expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(process.pid));
    release();
  });
});
