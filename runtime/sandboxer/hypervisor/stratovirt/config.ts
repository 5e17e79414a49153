/** The keys only StratoVirt reads, its defaults for the shared ones, and the rules between its keys. */
import type { CommonDefaults } from "../../config/common-tables.ts";
import { absolute, str } from "../../config/schema-lang.ts";
import type { ConfigWith, VmmKeys } from "../../config/vmm-keys.ts";

export const STRATOVIRT_KEYS = {
  sandbox: {},
  hypervisor: {},
  tables: {
    virtiofsd_conf: {
      path: str("StratoVirt's vhost_user_fs binary.", "/usr/bin/vhost_user_fs", { check: absolute }),
    },
  },
} satisfies VmmKeys;
export type StratoVirtConfig = ConfigWith<typeof STRATOVIRT_KEYS>;

/** The shared keys StratoVirt reads. */
export const STRATOVIRT_USES = ["hypervisor.machine_type", "hypervisor.block_device_driver"];

export const STRATOVIRT_DEFAULTS: CommonDefaults = {
  hypervisor: {
    path: "/usr/bin/stratovirt",
    image_path: "",
    initrd_path: "/var/lib/kuasar/kuasar.initrd",
    kernel_params: "task.log_level=debug task.sharefs_type=virtiofs",
    firmware: "/usr/share/edk2/ovmf/OVMF_CODE.fd",
    machine_type: "q35,mem-share=on",
  },
};

const STRATOVIRT_MACHINE = /^(q35|virt|microvm)$/;

export function crossCheckStratoVirt(
  config: StratoVirtConfig,
  _set: (key: string) => boolean,
  problems: string[],
): void {
  const h = config.hypervisor;
  const type = h.machine_type.split(",")[0]!.replace(/^type=/, "");
  if (!STRATOVIRT_MACHINE.test(type)) {
    problems.push(
      `hypervisor.machine_type: expected q35, virt or microvm (with options), found ${JSON.stringify(h.machine_type)}`,
    );
  }
  if (h.block_device_driver === "VirtioScsi") {
    problems.push('hypervisor.block_device_driver = "VirtioScsi" is not supported for stratovirt: use virtio-blk');
  }
  if ((type === "microvm") !== (h.block_device_driver === "VirtioMmio")) {
    problems.push(
      `hypervisor.block_device_driver = "${h.block_device_driver}" does not fit machine_type = "${h.machine_type}": ` +
        "microvm takes virtio-mmio, q35/virt take virtio-blk",
    );
  }
}
