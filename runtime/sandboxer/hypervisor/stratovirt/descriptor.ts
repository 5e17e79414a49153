import { defineVmm } from "../descriptor.ts";
import { crossCheckStratoVirt, STRATOVIRT_DEFAULTS, STRATOVIRT_KEYS, STRATOVIRT_USES } from "./config.ts";
import { STRATOVIRT_DOCTOR } from "./doctor.ts";
import { StratoVirtVm } from "./driver.ts";

/** StratoVirt: virtio-fs through its vhost_user_fs, vhost-vsock, KVM only. */
export const STRATOVIRT = defineVmm({
  name: "stratovirt",
  binaryKey: "path",
  firmwareKey: "firmware",
  config: {
    keys: STRATOVIRT_KEYS,
    uses: STRATOVIRT_USES,
    defaults: STRATOVIRT_DEFAULTS,
    crossCheck: crossCheckStratoVirt,
  },
  driver: StratoVirtVm,
  doctor: STRATOVIRT_DOCTOR,
});
