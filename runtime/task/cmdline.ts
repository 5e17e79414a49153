import { readFile } from "node:fs/promises";
import { isLevel, type Level } from "./log.ts";

/** The task.* kernel parameters vmm-task reads (Kuasar's names and defaults). */
export interface TaskParams {
  sharefsType: "9p" | "virtiofs";
  logLevel: Level;
  /** Serve a debug shell on vsock port 1025 and answer SandboxService.ExecVMProcess (both run commands as root). */
  debug: boolean;
  /**
   * task.hybrid_vsock: the host reaches the agent through hybrid vsock (cloud-hypervisor, vhost-device-vsock), whose
   * VMM picks the source port, so the agent does not demand a privileged one. Without it (vhost-vsock) only peers
   * with a source port <= 1023 are served. The host builds the command line, so it is trusted.
   */
  hybridVsock: boolean;
  enableTracing: boolean;
  debugShell: string;
  /** Unknown task.* keys and bad values, each naming the parameter; the defaults were used instead. */
  warnings: string[];
}

export const DEFAULT_PARAMS: Omit<TaskParams, "warnings"> = {
  sharefsType: "9p",
  logLevel: "info",
  debug: false,
  hybridVsock: false,
  enableTracing: false,
  // The guest image is busybox, which has no /bin/bash.
  debugShell: "/bin/sh",
};

/** Splits a kernel command line like the kernel does: whitespace-separated, double quotes group. */
export function splitCmdline(text: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  let any = false;
  for (const ch of text) {
    if (ch === '"') {
      quoted = !quoted;
      any = true;
    } else if (!quoted && /\s/.test(ch)) {
      if (any) out.push(cur);
      cur = "";
      any = false;
    } else {
      cur += ch;
      any = true;
    }
  }
  if (any) out.push(cur);
  return out;
}

function parseBool(key: string, value: string | undefined, warnings: string[]): boolean | undefined {
  if (value === undefined) return true;
  const v = value.toLowerCase();
  if (["1", "true", "yes", "on", "y"].includes(v)) return true;
  if (["0", "false", "no", "off", "n"].includes(v)) return false;
  warnings.push(`kernel parameter ${key}=${value} is not a boolean (use ${key}, ${key}=1 or ${key}=0); ignored`);
  return undefined;
}

export function parseCmdline(text: string): TaskParams {
  const p: TaskParams = { ...DEFAULT_PARAMS, warnings: [] };
  const w = p.warnings;
  for (const token of splitCmdline(text)) {
    if (!token.startsWith("task.")) continue;
    const eq = token.indexOf("=");
    const key = eq < 0 ? token : token.slice(0, eq);
    const value = eq < 0 ? undefined : token.slice(eq + 1);
    switch (key) {
      case "task.sharefs_type":
        if (value === "9p" || value === "virtiofs") p.sharefsType = value;
        else w.push(`kernel parameter task.sharefs_type=${value ?? ""} must be 9p or virtiofs; using 9p`);
        break;
      case "task.log_level": {
        const v = value?.toLowerCase() === "warning" ? "warn" : value?.toLowerCase();
        if (v !== undefined && isLevel(v)) p.logLevel = v;
        else
          w.push(
            `kernel parameter task.log_level=${value ?? ""} must be error, warn, info, debug or trace; using info`,
          );
        break;
      }
      case "task.debug":
        p.debug = parseBool(key, value, w) ?? p.debug;
        break;
      case "task.hybrid_vsock":
        p.hybridVsock = parseBool(key, value, w) ?? p.hybridVsock;
        break;
      case "task.enable_tracing":
        p.enableTracing = parseBool(key, value, w) ?? p.enableTracing;
        break;
      case "task.debug_shell":
        if (value?.startsWith("/")) p.debugShell = value;
        else w.push(`kernel parameter task.debug_shell=${value ?? ""} must be an absolute path; using /bin/sh`);
        break;
      default:
        w.push(
          `unknown kernel parameter ${key} ignored (known: task.sharefs_type, task.log_level, task.debug, task.hybrid_vsock, task.enable_tracing, task.debug_shell)`,
        );
    }
  }
  return p;
}

export async function readCmdline(file = "/proc/cmdline"): Promise<TaskParams> {
  return parseCmdline(await readFile(file, "utf8"));
}
