import { readdirSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { type NetlinkAddon, netlinkAddon } from "../native/ns/netlink.ts";
import { type ARPNeighbor, type Interface, IPFamily, type Route } from "../protos/gen/kuasar/sandbox_pb.ts";

/** Neighbour entries taken in one call; a pod netns has a handful. */
export const MAX_NEIGHBOURS = 1024;

// What the host sends becomes netlink requests: every field is checked against its form first, so a request carries
// only what the host meant and a refusal names the field.
const IFNAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;
const MAC = /^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/;

function checkIfname(what: string, name: string): string {
  if (!IFNAME.test(name)) throw new Error(`${what}: "${name}" is not a link name (1-15 of A-Z a-z 0-9 _ . -)`);
  return name;
}

function checkMac(what: string, mac: string): string {
  if (!MAC.test(mac)) throw new Error(`${what}: "${mac}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return mac;
}

/** An address of the given family, without a zone or prefix. */
function checkIp(what: string, address: string, family: IPFamily): string {
  const want = family === IPFamily.v6 ? 6 : family === IPFamily.v4 ? 4 : 0;
  if (want === 0) throw new Error(`${what}: address family ${family} is neither v4 nor v6`);
  if (isIP(address) !== want || address.includes("%")) {
    throw new Error(`${what}: "${address}" is not an IPv${want} address`);
  }
  return address;
}

function checkPrefix(what: string, prefix: string, family: IPFamily): string {
  const max = family === IPFamily.v6 ? 128 : 32;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) {
    throw new Error(`${what}: prefix length "${prefix}" is not a number from 0 to ${max}`);
  }
  return String(Number(prefix));
}

/** Checks every field of an interface the host sent; throws naming the interface and field. */
export function checkInterface(itf: Interface): void {
  const what = `interface ${JSON.stringify(itf.name)}`;
  checkIfname(`${what} name`, itf.name);
  checkMac(`${what} hwAddr`, itf.hwAddr);
  if (itf.mtu !== 0n && (itf.mtu < 68n || itf.mtu > 65535n)) {
    throw new Error(`${what} mtu: ${itf.mtu} is outside 68..65535`);
  }
  for (const a of itf.IPAddresses) {
    checkIp(`${what} address`, a.address, a.family);
    checkPrefix(`${what} address ${a.address}`, a.mask, a.family);
  }
}

/** Checks every field of a route the host sent; dest is "" (default), an address, or address/prefix. */
export function checkRoute(r: Route): void {
  const what = `route to ${JSON.stringify(r.dest || "default")}`;
  if (r.dest) {
    const [addr = "", prefix, ...rest] = r.dest.split("/");
    if (rest.length) throw new Error(`${what}: dest is not address/prefix`);
    checkIp(`${what} dest`, addr, r.family);
    if (prefix !== undefined) checkPrefix(`${what} dest`, prefix, r.family);
  }
  if (r.gateway) checkIp(`${what} gateway`, r.gateway, r.family);
  if (r.source) checkIp(`${what} source`, r.source, r.family);
  if (r.device) checkIfname(`${what} device`, r.device);
}

/** Checks every field of a neighbour entry the host sent. */
export function checkNeighbour(n: ARPNeighbor): void {
  const to = n.toIPAddress;
  const what = `neighbour ${JSON.stringify(to?.address ?? "")}`;
  if (!to) throw new Error(`${what}: toIPAddress is missing`);
  checkIp(what, to.address, to.family);
  checkMac(`${what} lladdr`, n.lladdr);
  checkIfname(`${what} device`, n.device);
}

/**
 * Guest NICs by MAC address; the host names each interface by the MAC it gave the VM's NIC. Read synchronously: a
 * few small sysfs files on SetupSandbox's path, where each asynchronous read was a round trip through the threadpool.
 */
export function linksByMac(sysNet = "/sys/class/net"): Map<string, string> {
  const out = new Map<string, string>();
  let names: string[];
  try {
    names = readdirSync(sysNet);
  } catch {
    return out;
  }
  for (const name of names) {
    let mac: string;
    try {
      mac = readFileSync(`${sysNet}/${name}/address`, "utf8").trim().toLowerCase();
    } catch {
      continue;
    }
    if (mac && mac !== "00:00:00:00:00:00") out.set(mac, name);
  }
  return out;
}

/** Renames each NIC to the pod's interface name, sets its MTU and addresses, and brings it up. */
export function configureInterfaces(interfaces: Interface[], addon?: NetlinkAddon): void {
  for (const itf of interfaces) checkInterface(itf);
  const nl = addon ?? netlinkAddon();
  const byMac = linksByMac();
  for (const itf of interfaces) {
    const current = byMac.get(itf.hwAddr.toLowerCase());
    if (!current) {
      throw new Error(
        `interface ${itf.name}: no guest NIC has MAC ${itf.hwAddr} (guest NICs: ${[...byMac].join(", ")})`,
      );
    }
    // The kernel renames only a link that is down, and applies a request's new name before its flags.
    nl.linkSet(current, 0, "", 0);
    if (current !== itf.name || itf.mtu > 0n)
      nl.linkSet(current, -1, current === itf.name ? "" : itf.name, Number(itf.mtu));
    for (const a of itf.IPAddresses) nl.addrAdd(itf.name, a.address, Number(a.mask));
    nl.linkSet(itf.name, 1, "", 0);
  }
  nl.linkSet("lo", 1, "", 0);
}

/** Adds routes in order: link-scope routes first, so gateways are reachable when default routes are added. */
export function configureRoutes(routes: Route[], addon?: NetlinkAddon): void {
  for (const r of routes) checkRoute(r);
  const nl = addon ?? netlinkAddon();
  const ordered = [...routes].sort((a, b) => Number(!!a.gateway) - Number(!!b.gateway));
  for (const r of ordered) {
    const v6 = r.family === IPFamily.v6;
    const [dst = "", prefix] = r.dest.split("/");
    const prefixLen = !dst ? 0 : prefix !== undefined ? Number(prefix) : v6 ? 128 : 32;
    // As `ip route` does: a route without a gateway reaches its destination on the link.
    nl.routeReplace(v6 ? 6 : 4, dst, prefixLen, r.gateway, r.device, r.source, r.scope === 253 || !r.gateway);
  }
}

/**
 * Installs the pod netns's permanent neighbour entries (created or replaced) after its interfaces are up: with
 * netlink through the ns addon, since busybox `ip neigh` only shows and flushes. All are checked before any is set.
 */
export function configureNeighbours(neighbours: ARPNeighbor[], addon?: NetlinkAddon): void {
  if (neighbours.length > MAX_NEIGHBOURS) {
    throw new Error(`${neighbours.length} neighbour entries sent; at most ${MAX_NEIGHBOURS} are taken`);
  }
  for (const n of neighbours) checkNeighbour(n);
  if (neighbours.length === 0) return;
  const neigh = addon ?? netlinkAddon();
  for (const n of neighbours) {
    neigh.neighReplace(n.toIPAddress!.address, n.lladdr, n.device);
  }
}
