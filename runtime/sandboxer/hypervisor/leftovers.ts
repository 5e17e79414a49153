import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../../log/log.ts";
import { PID_FILE } from "./vm.ts";

/** comm (15 characters at most) of the programs a sandbox runs on the host. */
const SANDBOX_PROGRAMS = new Set(["qemu-system-x86", "cloud-hyperviso", "stratovirt", "vhost-device-vs", "virtiofsd"]);

/**
 * Kills what a sandbox directory without a readable sandbox.json still has running: the VMM its pid file names and
 * any VMM or helper program whose command line points into the directory. Nothing else is touched, so a process that
 * merely mentions the path (an admin's tail) survives.
 */
export async function killSandboxProcesses(dir: string, log: Logger): Promise<number[]> {
  const inDir = `${dir}/`;
  const recorded = Number((await readFile(path.join(dir, PID_FILE), "utf8").catch(() => "")).trim());
  const killed: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const [cmdline, comm] = await Promise.all([
      readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => ""),
      readFile(`/proc/${pid}/comm`, "utf8").catch(() => ""),
    ]);
    if (!cmdline.includes(inDir)) continue;
    if (pid !== recorded && !SANDBOX_PROGRAMS.has(comm.trim())) continue;
    try {
      process.kill(pid, "SIGKILL");
      killed.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  if (killed.length) log.warn(`${dir}: killed leftover VMM and helper processes ${killed.join(", ")}`);
  return killed;
}
