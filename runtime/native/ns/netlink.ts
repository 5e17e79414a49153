import { loadAddon } from "../load.ts";

/**
 * The rtnetlink calls of runtime/native/ns/netlink.c, in the calling thread's network namespace. Errors carry the
 * errno name as code (EINVAL, ENODEV, EEXIST, ...) and a message naming the link, address or route.
 */
export interface NetlinkAddon {
  /** A permanent neighbour entry (RTM_NEWNEIGH, created or replaced): ip (v4 or v6) at mac on link dev. */
  neighReplace(ip: string, mac: string, dev: string): void;
  /** Link dev up (1), down (0) or as it is (-1); renamed to name ("" keeps it; only while down); mtu (0 keeps it). */
  linkSet(dev: string, up: -1 | 0 | 1, name: string, mtu: number): void;
  /** The address ip/prefixLen (v4 or v6) on link dev, added or replaced. */
  addrAdd(dev: string, ip: string, prefixLen: number): void;
  /**
   * A unicast route in the main table, created or replaced: to dst/prefixLen ("" and 0: the default route), through
   * gateway, out of dev, with source src ("" for none of these); scope link or universe.
   */
  routeReplace(
    family: 4 | 6,
    dst: string,
    prefixLen: number,
    gateway: string,
    dev: string,
    src: string,
    linkScope: boolean,
  ): void;
}

export function netlinkAddon(): NetlinkAddon {
  return loadAddon<NetlinkAddon>("ns", "KUASAR_NS_ADDON");
}
