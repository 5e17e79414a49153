import { existsSync, writeFileSync } from "node:fs";
import { type Pid1Options, rooted } from "./mounts.ts";
import { sysctlPath } from "./sandbox-ns.ts";

/**
 * The sysctls Kuasar's vmm-task writes at boot (DEFAULT_SYSCTL, applied in init_vm_rootfs, vmm/task/src/main.rs
 * of kuasar-io/kuasar). Kuasar also sets cgroup v1's memory.use_hierarchy, which has no counterpart here: the guest
 * runs cgroup2, where memory accounting is always hierarchical.
 */
export const DEFAULT_SYSCTLS: Readonly<Record<string, string>> = {
  // Allocations are not refused up front: the pod's cgroup limits and the OOM killer bound memory instead.
  "vm.overcommit_memory": "1",
  // IPVS drops connections whose real server is gone rather than black-holing them (only with ip_vs loaded).
  "net.ipv4.vs.expire_nodest_conn": "1",
};

/**
 * Writes DEFAULT_SYSCTLS at guest setup, before SetupSandbox applies the pod's own, which therefore win. A key this
 * kernel lacks is skipped, as Kuasar does; any other failure is logged and the boot goes on (a tuning value is not
 * worth a dead VM).
 */
export function applyDefaultSysctls(opts: Pid1Options = {}): string[] {
  const applied: string[] = [];
  for (const [key, value] of Object.entries(DEFAULT_SYSCTLS)) {
    const file = rooted(opts, sysctlPath(key));
    // Checked first: the exception a missing key throws costs tens of ms of the agent's start under TCG.
    if (!existsSync(file)) continue;
    try {
      // r+ never creates: a key the kernel lacks stays missing (ENOENT) rather than becoming a file.
      writeFileSync(file, `${value}\n`, { flag: "r+" });
      applied.push(key);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code !== "ENOENT") opts.log?.warn(`default sysctl ${key}=${value} not applied (${file}): ${e.message}`);
    }
  }
  return applied;
}
