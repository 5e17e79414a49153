import type { Config } from "../sandboxer/config/schema.ts";
import { chooseAccelerator, chooseVsock } from "../sandboxer/hypervisor/host.ts";
import { parseAccelerators } from "../sandboxer/hypervisor/qemu/plan.ts";
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

const KVM_FIX =
  "on bare metal enable VT-x/AMD-V in the firmware and `modprobe kvm_intel` (or kvm_amd); in a VM turn on nested " +
  "virtualisation";

/** KVM or only TCG, decided exactly as the QEMU driver decides it. */
export async function checkKvm(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  const h = config.hypervisor;
  if (h.type !== "qemu") {
    // cloud-hypervisor and StratoVirt have no software emulation.
    const c = await chooseAccelerator("auto", probes);
    return c.value === "kvm"
      ? { id: "kvm", status: "ok", verdict: `KVM usable: ${c.reason}` }
      : {
          id: "kvm",
          status: "fail",
          verdict: `${h.type} needs KVM, which is not usable: ${c.reason}`,
          fix: `${KVM_FIX}; or use qemu, which falls back to TCG`,
        };
  }
  const wanted = parseAccelerators(h.machine_accelerators).accel;
  let c: Awaited<ReturnType<typeof chooseAccelerator>>;
  try {
    c = await chooseAccelerator(wanted, probes);
  } catch (err) {
    return {
      id: "kvm",
      status: "fail",
      verdict: (err as Error).message,
      fix: `${KVM_FIX}; or set machine_accelerators = "auto"`,
    };
  }
  if (c.value === "kvm") return { id: "kvm", status: "ok", verdict: `KVM usable: ${c.reason}` };
  if (wanted === "tcg") return { id: "kvm", status: "ok", verdict: `TCG (software emulation): ${c.reason}` };
  return {
    id: "kvm",
    status: "warn",
    verdict: `only TCG (software emulation) is possible: ${c.reason}`,
    fix: `${KVM_FIX}. TCG works, but guests boot several times slower`,
  };
}

/** The vsock transport the driver will use: vhost-vsock, or hybrid vsock through vhost-device-vsock. */
export async function checkVsock(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  const h = config.hypervisor;
  if (h.type === "cloud-hypervisor") {
    return { id: "vsock", status: "ok", verdict: "hybrid vsock, built into cloud-hypervisor" };
  }
  if (h.type === "stratovirt") {
    return (await probes.exists("/dev/vhost-vsock"))
      ? { id: "vsock", status: "ok", verdict: "vhost-vsock: /dev/vhost-vsock exists" }
      : {
          id: "vsock",
          status: "fail",
          verdict: "stratovirt talks to the guest over vhost-vsock, and /dev/vhost-vsock does not exist",
          fix: "modprobe vhost_vsock (and add it to /etc/modules-load.d/)",
        };
  }
  try {
    const c = await chooseVsock(h.vsock_mode, h.vhost_user_vsock_path, probes);
    if (c.value === "vhost") return { id: "vsock", status: "ok", verdict: `vhost-vsock: ${c.reason}` };
    const v = await probes.run(h.vhost_user_vsock_path, ["--version"]);
    const version = v.ok ? (v.output.trim().split("\n")[0] ?? "") : "";
    return {
      id: "vsock",
      status: "ok",
      verdict: `hybrid vsock through ${version || h.vhost_user_vsock_path}: ${c.reason}`,
    };
  } catch (err) {
    return {
      id: "vsock",
      status: "fail",
      verdict: (err as Error).message,
      fix: "modprobe vhost_vsock, or install vhost-device-vsock (Debian sid; see scripts/install-prereqs.sh)",
    };
  }
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
