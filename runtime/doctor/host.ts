import type { Config } from "../sandboxer/config/schema.ts";
import { vmmOf } from "../sandboxer/hypervisor/registry.ts";
import type { DoctorProbes } from "./probes.ts";
import type { CheckResult } from "./report.ts";

/** vhost-vsock (and the host's AF_VSOCK transport for it) arrived in Linux 4.8. */
const MIN_KERNEL: [number, number] = [4, 8];

export function checkHostKernel(probes: DoctorProbes): CheckResult {
  const release = probes.kernelRelease();
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) {
    return {
      id: "host-kernel",
      status: "warn",
      verdict: `cannot read a version from the kernel release "${release}"`,
      fix: `make sure the host runs Linux ${MIN_KERNEL.join(".")} or newer`,
    };
  }
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const min = MIN_KERNEL.join(".");
  if (major < MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor < MIN_KERNEL[1])) {
    return {
      id: "host-kernel",
      status: "fail",
      verdict: `host kernel ${release} is older than ${min} (vhost-vsock came in ${min})`,
      fix: `upgrade the host kernel to ${min} or newer`,
    };
  }
  return { id: "host-kernel", status: "ok", verdict: `host kernel ${release} (>= ${min})` };
}

/** KVM or only TCG, decided as the configured VMM's driver decides it. */
export async function checkKvm(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  return { id: "kvm", ...(await vmmOf(config.hypervisor.type).doctor.kvm(config, probes)) };
}

/** The vsock transport the driver will use: vhost-vsock, or hybrid vsock (the VMM's own, or vhost-device-vsock). */
export async function checkVsock(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  return { id: "vsock", ...(await vmmOf(config.hypervisor.type).doctor.vsock(config, probes)) };
}

const CONTROLLERS = ["cpu", "memory", "pids"];
const UNIT_FILES = [
  "/etc/systemd/system/kuasar-vmm.service",
  "/usr/lib/systemd/system/kuasar-vmm.service",
  "/lib/systemd/system/kuasar-vmm.service",
];

/** systemd's override file for the unit (what `systemctl edit kuasar-vmm` writes). */
const UNIT_OVERRIDE = "/etc/systemd/system/kuasar-vmm.service.d/override.conf";

/** The last Delegate= a unit file sets, or undefined. */
function delegateOf(text: string): string | undefined {
  let value: string | undefined;
  for (const line of text.split("\n")) {
    const m = /^\s*Delegate\s*=\s*(.*?)\s*$/.exec(line);
    if (m) value = m[1];
  }
  return value;
}

/**
 * cgroup v2 with the controllers pods are accounted by, and Delegate=yes on the service so systemd leaves cgroup
 * management below it to the daemon.
 */
export async function checkCgroup(probes: DoctorProbes, cgroupRoot = "/sys/fs/cgroup"): Promise<CheckResult> {
  const mounts = (await probes.readText("/proc/self/mounts")) ?? "";
  const fsType = mounts
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[1] === cgroupRoot)
    .map((f) => f[2])
    .pop();
  if (fsType !== "cgroup2") {
    const unified = mounts.split("\n").find((l) => l.split(" ")[2] === "cgroup2");
    return {
      id: "cgroup",
      status: "warn",
      verdict:
        `${cgroupRoot} is ${fsType ?? "not mounted"}, not cgroup v2` +
        (unified ? ` (cgroup v1 or hybrid layout; cgroup2 only at ${unified.split(" ")[1]})` : ""),
      fix:
        "boot with systemd.unified_cgroup_hierarchy=1 (the default since systemd 247): pod cgroups work on v1 too, " +
        "but systemd delegates a cgroup subtree (the unit's Delegate=yes) safely only on cgroup v2",
    };
  }
  const available = ((await probes.readText(`${cgroupRoot}/cgroup.controllers`)) ?? "").trim().split(/\s+/);
  const missing = CONTROLLERS.filter((c) => !available.includes(c));
  if (missing.length > 0) {
    return {
      id: "cgroup",
      status: "warn",
      verdict: `cgroup v2 lacks the ${missing.join(", ")} controller${missing.length > 1 ? "s" : ""} (has: ${available.join(" ") || "none"})`,
      fix: "enable the controllers in the host kernel; pods get no limits or stats for what is missing",
    };
  }
  let unit: string | undefined;
  let delegate: string | undefined;
  for (const file of UNIT_FILES) {
    const text = await probes.readText(file);
    if (text === undefined) continue;
    unit = file;
    const override = await probes.readText(UNIT_OVERRIDE);
    delegate = (override !== undefined ? delegateOf(override) : undefined) ?? delegateOf(text);
    break;
  }
  const have = `cgroup v2 with ${CONTROLLERS.join(", ")}`;
  if (!unit) {
    return {
      id: "cgroup",
      status: "ok",
      verdict: `${have}; kuasar-vmm.service is not installed (make install-vmm installs it with Delegate=yes)`,
    };
  }
  // Delegate= takes a boolean or a list of controllers (which also delegates).
  if (!delegate || /^(no|false|off|0)$/i.test(delegate)) {
    return {
      id: "cgroup",
      status: "warn",
      verdict: `${have}, but ${unit} does not set Delegate=yes`,
      fix: `add Delegate=yes under [Service] (systemctl edit kuasar-vmm), then systemctl daemon-reload`,
    };
  }
  return { id: "cgroup", status: "ok", verdict: `${have}; ${unit} has Delegate=${delegate}` };
}

/** containerd's PortForward into a pod VM goes through an iptables NAT rule in the pod's network namespace. */
export async function checkPortForward(probes: DoctorProbes): Promise<CheckResult> {
  const found = await probes.which("iptables");
  if (!found) {
    return {
      id: "port-forward",
      status: "warn",
      verdict: "iptables is not installed: pods run, but kubectl port-forward into them fails",
      fix: "apt-get install iptables (any backend: nf_tables or legacy)",
    };
  }
  return { id: "port-forward", status: "ok", verdict: `${found} redirects PortForward in each pod's netns to the VM` };
}
