import { defineVmm } from "../descriptor.ts";
import { CLH_DEFAULTS, CLH_KEYS, CLH_USES, crossCheckClh } from "./config.ts";
import { CLH_DOCTOR } from "./doctor.ts";
import { ClhVm } from "./driver.ts";

/** cloud-hypervisor: virtio-fs through virtiofsd, its own hybrid vsock, KVM only. */
export const CLOUD_HYPERVISOR = defineVmm({
  name: "cloud-hypervisor",
  binaryKey: "path",
  firmwareKey: "firmware",
  config: { keys: CLH_KEYS, uses: CLH_USES, defaults: CLH_DEFAULTS, crossCheck: crossCheckClh },
  driver: ClhVm,
  doctor: CLH_DOCTOR,
});
