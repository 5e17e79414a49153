/** The doctor's checks for QEMU, on the driver's own decisions: accelerator, vsock transport, devices, share. */
import type { Vmm } from "../descriptor.ts";
import type { Accel, Choice } from "../host.ts";
import { KVM_FIX, virtiofsdFinding } from "../host-checks.ts";
import { parseAccelerators, qemuAccelerator } from "./accelerator.ts";
import type { QemuConfig } from "./config.ts";
import { shareDevice, vsockDevice } from "./plan.ts";
import { qemuVsock } from "./vsock.ts";

export const QEMU_DOCTOR: Vmm<QemuConfig>["doctor"] = {
  installHint: "apt-get install qemu-system-x86",

  /** KVM or only TCG, decided exactly as the QEMU driver decides it. */
  async kvm(config, probes) {
    const accelerators = config.hypervisor.machine_accelerators;
    let c: Choice<Accel>;
    try {
      c = await qemuAccelerator(accelerators, probes);
    } catch (err) {
      return {
        status: "fail",
        verdict: (err as Error).message,
        fix: `${KVM_FIX}; or set machine_accelerators = "auto"`,
      };
    }
    if (c.value === "kvm") return { status: "ok", verdict: `KVM usable: ${c.reason}` };
    if (parseAccelerators(accelerators).accel === "tcg")
      return { status: "ok", verdict: `TCG (software emulation): ${c.reason}` };
    return {
      status: "warn",
      verdict: `only TCG (software emulation) is possible: ${c.reason}`,
      fix: `${KVM_FIX}. TCG works, but guests boot several times slower`,
    };
  },

  async vsock(config, probes) {
    const helper = config.hypervisor.vhost_user_vsock_path;
    try {
      const c = await qemuVsock(config, probes);
      if (c.value === "vhost") return { status: "ok", verdict: `vhost-vsock: ${c.reason}` };
      const v = await probes.run(helper, ["--version"]);
      const version = v.ok ? (v.output.trim().split("\n")[0] ?? "") : "";
      return { status: "ok", verdict: `hybrid vsock through ${version || helper}: ${c.reason}` };
    } catch (err) {
      return {
        status: "fail",
        verdict: (err as Error).message,
        fix: "modprobe vhost_vsock, or install vhost-device-vsock (Debian sid; see scripts/install-prereqs.sh)",
      };
    }
  },

  /** QEMU builds differ in the devices they carry: ask for the ones this configuration's transports use. */
  async binary(config, probes, binary, version) {
    const h = config.hypervisor;
    const wanted = [shareDevice(h)];
    const vsock = await qemuVsock(config, probes).catch(() => undefined);
    if (vsock) wanted.push(vsockDevice(h, vsock.value));
    const help = await probes.run(binary, ["-machine", "none", "-device", "help"]);
    const listed = help.ok ? help.output : "";
    const missing = wanted.filter((d) => !listed.includes(`"${d}"`));
    if (missing.length > 0) {
      return {
        status: "fail",
        verdict: `${binary} (${version}) lacks the device${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`,
        fix: "use a QEMU built with vhost-user and virtfs support (Debian's qemu-system-x86 has both)",
      };
    }
    return { status: "ok", verdict: `${binary}: ${version}; has ${wanted.join(", ")}` };
  },

  async shareFs(config, probes) {
    if (config.hypervisor.share_fs !== "VirtioFS") {
      return { status: "skip", verdict: "not used: share_fs = Virtio9P (QEMU serves 9p itself)" };
    }
    return virtiofsdFinding(config, probes);
  },
};
