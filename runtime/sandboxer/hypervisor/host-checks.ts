/**
 * Host checks more than one VMM's descriptor makes for the doctor (`vmm-sandboxer check`), built on the same
 * decisions the drivers take: a verdict, and what to do when it is not ok.
 */
import type { CommonConfig } from "../config/common-tables.ts";
import { chooseAccelerator, type HostProbes, virtiofsdDialect } from "./host.ts";
import { virtiofsd } from "./virtiofsd.ts";

export interface Finding {
  status: "ok" | "warn" | "fail" | "skip";
  verdict: string;
  fix?: string;
}

export type RunResult = { ok: true; output: string } | { ok: false; error: string };

/** The drivers' probes plus running a program, which the doctor does to ask for versions and device lists. */
export interface CheckProbes extends HostProbes {
  /** Runs a program and returns stdout and stderr together; ok is false only when it could not run. */
  run(file: string, args: string[]): Promise<RunResult>;
}

export const KVM_FIX =
  "on bare metal enable VT-x/AMD-V in the firmware and `modprobe kvm_intel` (or kvm_amd); in a VM turn on nested " +
  "virtualisation";

/** A VMM without software emulation: KVM must be usable, decided as QEMU's "auto" decides it. */
export async function kvmRequired(name: string, probes: HostProbes): Promise<Finding> {
  const c = await chooseAccelerator("auto", probes);
  return c.value === "kvm"
    ? { status: "ok", verdict: `KVM usable: ${c.reason}` }
    : {
        status: "fail",
        verdict: `${name} needs KVM, which is not usable: ${c.reason}`,
        fix: `${KVM_FIX}; or use qemu, which falls back to TCG`,
      };
}

/** Where the sandbox's directories would be; the doctor builds command lines without a sandbox. */
const NO_SANDBOX = { id: "doctor", dir: "/nonexistent", shareDir: "/nonexistent", netDevices: [] };

/** virtiofsd ([hypervisor.virtiofsd] path) is there, and this configuration can pass it its flags. */
export async function virtiofsdFinding(config: CommonConfig, probes: HostProbes): Promise<Finding> {
  const key = "hypervisor.virtiofsd.path";
  const binary = config.hypervisor.virtiofsd.path;
  if (!(await probes.executable(binary))) {
    return {
      status: "fail",
      verdict: `${key} = ${binary}: no executable there`,
      fix: `apt-get install qemu-system-common (C virtiofsd at /usr/lib/qemu/virtiofsd) or install the Rust virtiofsd; or set ${key}`,
    };
  }
  try {
    const dialect = await virtiofsdDialect(binary, probes);
    // Builds the real command line: options one implementation lacks fail here as they would at sandbox start.
    virtiofsd(config, NO_SANDBOX, dialect, []);
    return { status: "ok", verdict: `${binary}: ${dialect === "c" ? "QEMU's C virtiofsd" : "the Rust virtiofsd"}` };
  } catch (err) {
    return {
      status: "fail",
      verdict: (err as Error).message,
      fix: `fix [hypervisor.virtiofsd] in ${config.file ?? "the configuration"}`,
    };
  }
}
