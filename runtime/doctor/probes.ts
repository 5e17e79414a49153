import { constants } from "node:fs";
import { access, readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { type HostProbes, realProbes } from "../sandboxer/hypervisor/host.ts";

export type RunResult = { ok: true; output: string } | { ok: false; error: string };

/** The daemon's host probes plus what only the doctor asks; injected so every verdict is testable. */
export interface DoctorProbes extends HostProbes {
  kernelRelease(): string;
  /** A file's text, or undefined when it is missing or unreadable. */
  readText(path: string): Promise<string | undefined>;
  /** Runs a program and returns stdout and stderr together; ok is false only when it could not run. */
  run(file: string, args: string[]): Promise<RunResult>;
  /** Can this process create entries in the directory. */
  writableDir(path: string): Promise<boolean>;
  /** A program's path on PATH (plus the sbin directories services see), or undefined. */
  which(name: string): Promise<string | undefined>;
}

/** Directories a service's PATH has even when the shell running the doctor lacks them. */
const SERVICE_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

export const realDoctorProbes: DoctorProbes = {
  ...realProbes,
  kernelRelease: () => os.release(),
  readText: (p) => readFile(p, "utf8").catch(() => undefined),
  async run(file, args) {
    try {
      const r = await execa(file, args, { reject: false, timeout: 10_000, all: true, stdin: "ignore" });
      if (r.failed && r.exitCode === undefined) return { ok: false, error: r.shortMessage ?? `${file} did not run` };
      return { ok: true, output: String(r.all ?? "") };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  },
  writableDir: (p) =>
    access(p, constants.W_OK | constants.X_OK).then(
      () => true,
      () => false,
    ),
  async which(name) {
    const dirs = [...(process.env.PATH ?? "").split(":").filter(Boolean), ...SERVICE_PATH];
    for (const d of new Set(dirs)) {
      const candidate = path.join(d, name);
      if (await realProbes.executable(candidate)) return candidate;
    }
    return undefined;
  },
};
