import { defineVmm } from "../descriptor.ts";
import { checkQemuHost, crossCheckQemu, QEMU_DEFAULTS, QEMU_KEYS, QEMU_USES } from "./config.ts";
import { QEMU_DOCTOR } from "./doctor.ts";
import { QemuVm } from "./driver.ts";

/** QEMU: 9p or virtio-fs, vhost or hybrid vsock, kvm or tcg. */
export const QEMU = defineVmm({
  name: "qemu",
  binaryKey: "qemu_path",
  firmwareKey: "firmware_path",
  config: {
    keys: QEMU_KEYS,
    uses: QEMU_USES,
    defaults: QEMU_DEFAULTS,
    crossCheck: crossCheckQemu,
    checkHost: checkQemuHost,
  },
  driver: QemuVm,
  doctor: QEMU_DOCTOR,
});
