import { taskParams } from "../../contract/kernel-params.ts";
import type { CommonConfig } from "../config/common-tables.ts";
import type { SandboxSpec } from "./vm-api.ts";

export interface CmdlineParts {
  /** console=... for where the kernel's messages go. */
  console: string;
  /** Parameters the machine needs (e.g. pcie_ports=native). */
  platform?: string[];
  /** The block device holding image_path (root=<dev> ro), or undefined when booting initrd_path. */
  rootDevice: string | undefined;
  /** The root device is DAX-capable persistent memory: mount it with -o dax so files map straight from it. */
  rootDax?: boolean;
  sharefs: "9p" | "virtiofs";
  /**
   * The host reaches the agent through hybrid vsock (a unix socket), where the VMM picks the guest-visible source
   * port: task.hybrid_vsock tells the guest not to demand a privileged one (which vhost-vsock peers must have).
   */
  hybridVsock: boolean;
}

/**
 * The guest kernel command line: console, root filesystem, the task.* parameters vmm-task reads, then the
 * configured kernel_params and the sandbox's own, last so they win (the guest takes the last value of a key).
 */
export function kernelCmdline(config: CommonConfig, sandbox: SandboxSpec, p: CmdlineParts): string {
  const h = config.hypervisor;
  const root = p.rootDevice
    ? [`root=${p.rootDevice}`, ...(p.rootDax ? ["rootflags=dax"] : []), "ro", "rootfstype=ext4"]
    : ["rdinit=/sbin/init"];
  return [
    p.console,
    ...(p.platform ?? []),
    ...root,
    // A guest panic reboots after 1 s; the VMMs run with reboot turned into exit, so a dead guest ends the VM.
    "panic=1",
    // The boot-time IO-APIC timer check counts ticks against a busy-wait; on a loaded host (or under TCG) the
    // vCPU is descheduled and the kernel panics "IO-APIC + timer doesn't work!". The timer works; skip the check.
    "no_timer_check",
    ...taskParams({
      sharefsType: p.sharefs,
      logLevel: config.sandbox.log_level || "info",
      hybridVsock: p.hybridVsock,
      debug: h.task.debug,
      enableTracing: h.task.enable_tracing,
    }),
    h.kernel_params.trim(),
    (sandbox.kernelParams ?? "").trim(),
  ]
    .filter((s) => s !== "")
    .join(" ");
}
