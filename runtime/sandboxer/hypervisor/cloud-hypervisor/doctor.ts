/** The doctor's checks for cloud-hypervisor: KVM (it has no software emulation), its own vsock, virtiofsd. */
import type { Vmm } from "../descriptor.ts";
import { kvmRequired, virtiofsdFinding } from "../host-checks.ts";
import type { ClhConfig } from "./config.ts";

export const CLH_DOCTOR: Vmm<ClhConfig>["doctor"] = {
  installHint: "install cloud-hypervisor from its GitHub releases",
  kvm: (_config, probes) => kvmRequired("cloud-hypervisor", probes),
  vsock: async () => ({ status: "ok", verdict: "hybrid vsock, built into cloud-hypervisor" }),
  shareFs: (config, probes) => virtiofsdFinding(config, probes),
};
