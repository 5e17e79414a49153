/** How a VMM adds keys of its own to the configuration, and the configuration type its code then sees. */
import type { CommonConfig } from "./common-tables.ts";
import type { Fields, Model } from "./schema-lang.ts";

export interface VmmKeys {
  /** [sandbox] keys only this VMM reads. */
  sandbox: Fields;
  /** [hypervisor] keys only this VMM reads. */
  hypervisor: Fields;
  /** [hypervisor.<name>] tables only this VMM reads, by name. */
  tables: Record<string, Fields>;
}

/** The common configuration plus one VMM's own keys: what that VMM's driver, plan and checks take. */
export type ConfigWith<K extends VmmKeys> = CommonConfig & {
  sandbox: Model<K["sandbox"]>;
  hypervisor: Model<K["hypervisor"]> & { [T in keyof K["tables"]]: Model<K["tables"][T]> };
};
