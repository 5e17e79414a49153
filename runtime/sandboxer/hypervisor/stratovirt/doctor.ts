/** The doctor's checks for StratoVirt: KVM, /dev/vhost-vsock and its vhost_user_fs, as the driver needs them. */
import type { Vmm } from "../descriptor.ts";
import { kvmRequired } from "../host-checks.ts";
import type { StratoVirtConfig } from "./config.ts";
import { hasVhostVsock, NO_VHOST_VSOCK } from "./vsock.ts";

export const STRATOVIRT_DOCTOR: Vmm<StratoVirtConfig>["doctor"] = {
  installHint: "install StratoVirt (openEuler packages it)",
  kvm: (_config, probes) => kvmRequired("stratovirt", probes),

  async vsock(_config, probes) {
    return (await hasVhostVsock(probes))
      ? { status: "ok", verdict: "vhost-vsock: /dev/vhost-vsock exists" }
      : { status: "fail", verdict: NO_VHOST_VSOCK, fix: "modprobe vhost_vsock (and add it to /etc/modules-load.d/)" };
  },

  async shareFs(config, probes) {
    const key = "hypervisor.virtiofsd_conf.path";
    const binary = config.hypervisor.virtiofsd_conf.path;
    if (!(await probes.executable(binary))) {
      return {
        status: "fail",
        verdict: `${key} = ${binary}: no executable there`,
        fix: `install StratoVirt's vhost_user_fs or set ${key}`,
      };
    }
    return { status: "ok", verdict: `${binary} (vhost_user_fs)` };
  },
};
