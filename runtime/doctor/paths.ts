import path from "node:path";
import { probeDaemon } from "./daemon.ts";
import type { DoctorProbes } from "./probes.ts";
import type { CheckResult } from "./report.ts";

/** The nearest ancestor of p that exists (p itself when it does). */
async function nearestExisting(p: string, probes: DoctorProbes): Promise<string> {
  let cur = p;
  while (!(await probes.exists(cur)) && path.dirname(cur) !== cur) cur = path.dirname(cur);
  return cur;
}

/** The daemon binds --listen (removing a stale socket first) and creates --dir: both places must take writes. */
export async function checkPaths(listen: string, dir: string, probes: DoctorProbes): Promise<CheckResult> {
  const problems: string[] = [];
  const sockDir = path.dirname(listen);
  if (!(await probes.exists(sockDir))) {
    problems.push(`the socket directory ${sockDir} does not exist (the daemon does not create it)`);
  } else if (!(await probes.writableDir(sockDir))) {
    problems.push(`the socket directory ${sockDir} is not writable`);
  }
  // --dir is created with its parents when missing, so the nearest existing ancestor must take writes.
  const base = await nearestExisting(dir, probes);
  if (!(await probes.writableDir(base))) {
    problems.push(
      base === dir ? `the state directory ${dir} is not writable` : `${dir} cannot be created: ${base} is not writable`,
    );
  }
  if (problems.length > 0) {
    return {
      id: "paths",
      status: "fail",
      verdict: problems.join("; "),
      fix: "run the daemon as root (the unit does), or point --listen / --dir at writable places (OPTIONS in /etc/sysconfig/kuasar-vmm)",
    };
  }
  const state = base === dir ? dir : `${dir} (created on start)`;
  return { id: "paths", status: "ok", verdict: `socket ${listen} and state ${state} are writable` };
}

/** Whether a daemon answers on --listen right now; not running is a warning (the check may run before the start). */
export async function checkDaemon(listen: string, probes: DoctorProbes): Promise<CheckResult> {
  if (!(await probes.exists(listen))) {
    return {
      id: "daemon",
      status: "warn",
      verdict: `not running: ${listen} does not exist`,
      fix: "systemctl start kuasar-vmm (journalctl -u kuasar-vmm says why it stopped)",
    };
  }
  const r = await probeDaemon(listen);
  if (r.up) return { id: "daemon", status: "ok", verdict: `vmm-sandboxer answers on ${listen}` };
  return {
    id: "daemon",
    status: "warn",
    verdict: `${listen} exists but nothing answers on it (${r.reason}); a stale socket from a daemon that died?`,
    fix: "systemctl restart kuasar-vmm (it removes the stale socket); journalctl -u kuasar-vmm says why it stopped",
  };
}
