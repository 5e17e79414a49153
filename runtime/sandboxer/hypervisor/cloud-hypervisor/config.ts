/** cloud-hypervisor reads only shared keys: its defaults for them, and its rule between them. */
import type { CommonDefaults } from "../../config/common-tables.ts";
import type { ConfigWith, VmmKeys } from "../../config/vmm-keys.ts";

export const CLH_KEYS = { sandbox: {}, hypervisor: {}, tables: {} } satisfies VmmKeys;
export type ClhConfig = ConfigWith<typeof CLH_KEYS>;

/** The shared keys and tables cloud-hypervisor reads: virtio-fs is its only share. */
export const CLH_USES = ["hypervisor.virtiofsd"];

export const CLH_DEFAULTS: CommonDefaults = { hypervisor: { path: "/usr/local/bin/cloud-hypervisor" } };

export function crossCheckClh(config: ClhConfig, _set: (key: string) => boolean, problems: string[]): void {
  if (config.hypervisor.firmware !== "") {
    problems.push('hypervisor.firmware: cloud-hypervisor boots kernel_path directly here; set firmware = ""');
  }
}
