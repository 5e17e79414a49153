import { isIPv6 } from "node:net";
import { create } from "@bufbuild/protobuf";
import {
  type ARPNeighbor,
  ARPNeighborSchema,
  type Interface,
  InterfaceSchema,
  IPFamily,
  type Route,
  RouteSchema,
} from "../../protos/gen/kuasar/sandbox_pb.ts";
import { addresses, links, permanentNeighbours, type RouteInfo, routes } from "./netns.ts";
import { connectTap, disconnectTap, MAX_TAP_QUEUES } from "./tap.ts";

/** One VM NIC: the tap QEMU opens inside the pod netns, standing in for a CNI veth. */
export interface Nic {
  tap: string;
  veth: string;
  ifindex: number;
  mac: string;
  mtu: number;
}

export interface PodNetwork {
  nsPath: string;
  nics: Nic[];
  /** Queues of every tap, and so of every VM NIC. */
  queues: number;
  /** What the guest is told to configure (SetupSandbox / UpdateInterfaces / UpdateRoutes). */
  interfaces: Interface[];
  routes: Route[];
  /** The veths' permanent neighbour entries, installed in the guest after its interfaces and routes. */
  neighbors: ARPNeighbor[];
}

// rtnetlink scope numbers, as the guest's netlink calls expect them.
const SCOPES: Record<string, number> = { global: 0, universe: 0, site: 200, link: 253, host: 254 };

/**
 * Mirrors every veth of the pod netns into a tap with `queues` queues (queues.ts: one per vCPU) and collects
 * addresses, routes and permanent neighbours for the guest.
 */
export async function attachPodNetwork(nsPath: string, queues = 1): Promise<PodNetwork> {
  if (!Number.isInteger(queues) || queues < 1 || queues > MAX_TAP_QUEUES) {
    throw new Error(`tap queues must be an integer from 1 to ${MAX_TAP_QUEUES}, not ${queues}`);
  }
  const net: PodNetwork = { nsPath, nics: [], queues, interfaces: [], routes: [], neighbors: [] };
  try {
    for (const veth of (await links(nsPath)).filter((l) => l.kind === "veth")) {
      const tap = await connectTap(nsPath, veth, net.queues);
      net.nics.push({ tap, veth: veth.ifname, ifindex: veth.ifindex, mac: veth.address, mtu: veth.mtu });
      const addrs = await addresses(nsPath, veth.ifname);
      net.interfaces.push(
        create(InterfaceSchema, {
          device: veth.ifname,
          name: veth.ifname,
          hwAddr: veth.address,
          mtu: BigInt(veth.mtu),
          type: "veth",
          IPAddresses: addrs.map((a) => ({
            family: a.family === "inet6" ? IPFamily.v6 : IPFamily.v4,
            address: a.local,
            mask: String(a.prefixlen),
          })),
        }),
      );
      for (const n of await permanentNeighbours(nsPath, veth.ifname)) {
        if (!n.lladdr) continue;
        net.neighbors.push(
          create(ARPNeighborSchema, {
            toIPAddress: { family: isIPv6(n.dst) ? IPFamily.v6 : IPFamily.v4, address: n.dst },
            device: veth.ifname,
            lladdr: n.lladdr,
          }),
        );
      }
    }
    const devs = new Set(net.nics.map((n) => n.veth));
    for (const [flag, family] of [
      ["-4", IPFamily.v4],
      ["-6", IPFamily.v6],
    ] as const) {
      for (const r of await routes(nsPath, flag)) {
        if (!r.dev || !devs.has(r.dev) || r.protocol === "kernel") continue;
        net.routes.push(toRoute(r, family));
      }
    }
    return net;
  } catch (err) {
    await detachPodNetwork(net);
    throw err;
  }
}

function toRoute(r: RouteInfo, family: IPFamily): Route {
  return create(RouteSchema, {
    dest: r.dst === "default" ? "" : r.dst,
    gateway: r.gateway ?? "",
    device: r.dev ?? "",
    source: r.prefsrc ?? "",
    scope: SCOPES[r.scope ?? "global"] ?? 0,
    family,
  });
}

export async function detachPodNetwork(net: Pick<PodNetwork, "nsPath" | "nics">): Promise<void> {
  for (const nic of net.nics) await disconnectTap(net.nsPath, nic.veth, nic.tap);
}
