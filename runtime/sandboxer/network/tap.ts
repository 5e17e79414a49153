import { inNetns, type LinkInfo, links } from "./netns.ts";

/** The kernel's limit on a multi-queue tap (MAX_TAP_QUEUES in drivers/net/tun.c). */
export const MAX_TAP_QUEUES = 256;

/** Kuasar's tap name for the veth with this ifindex. */
export function tapName(ifindex: number): string {
  return `tap_kua_${ifindex}`;
}

/**
 * Creates the tap that stands in for a veth inside the pod netns and mirrors traffic between them with tc:
 * ingress on each side redirected to the other's egress. The VM's NIC then carries the veth's MAC and address.
 * With more than one queue the tap is multi-queue, and the VMM must open it with exactly that many (a single-queue
 * open of a multi-queue tap, or the reverse, fails with EINVAL).
 */
export async function connectTap(nsPath: string, veth: LinkInfo, queues: number): Promise<string> {
  const tap = tapName(veth.ifindex);
  const mq = queues > 1 ? ["multi_queue"] : [];
  await inNetns(nsPath, "ip", ["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr", ...mq]);
  await inNetns(nsPath, "ip", ["link", "set", "dev", tap, "mtu", String(veth.mtu), "up"]);
  for (const [from, to] of [
    [veth.ifname, tap],
    [tap, veth.ifname],
  ] as const) {
    await inNetns(nsPath, "tc", ["qdisc", "add", "dev", from, "ingress"]);
    await inNetns(nsPath, "tc", [
      ...["filter", "add", "dev", from, "parent", "ffff:", "protocol", "all"],
      ...["u32", "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to],
    ]);
  }
  return tap;
}

/** Removes a tap and the veth's ingress qdisc (its filters go with it). Missing pieces are not an error. */
export async function disconnectTap(nsPath: string, vethName: string, tap: string): Promise<void> {
  const present = new Set((await links(nsPath).catch(() => [])).map((l) => l.ifname));
  if (present.has(vethName)) await inNetns(nsPath, "tc", ["qdisc", "del", "dev", vethName, "ingress"]).catch(() => {});
  if (present.has(tap)) await inNetns(nsPath, "ip", ["link", "del", "dev", tap]);
}
