import { loadAddon } from "../load.ts";

/** The neighbour call of runtime/native/ns/ns.c. Errors carry the errno name as code (EINVAL, ENODEV, ...). */
export interface NeighAddon {
  /** A permanent neighbour entry (RTM_NEWNEIGH, created or replaced): ip (v4 or v6) at mac on link dev. */
  neighReplace(ip: string, mac: string, dev: string): void;
}

export function neighAddon(): NeighAddon {
  return loadAddon<NeighAddon>("ns", "KUASAR_NS_ADDON");
}
