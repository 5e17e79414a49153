import { create } from "@bufbuild/protobuf";
import {
  type Interface,
  InterfaceSchema,
  IPFamily,
  type Route,
  RouteSchema,
} from "../../protos/gen/kuasar/sandbox_pb.ts";
import { addresses, links, type RouteInfo, routes } from "./netns.ts";
import { connectTap, disconnectTap } from "./tap.ts";

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
  /** What the guest is told to configure (SetupSandbox / UpdateInterfaces / UpdateRoutes). */
  interfaces: Interface[];
  routes: Route[];
}

// rtnetlink scope numbers, as the guest's netlink calls expect them.
const SCOPES: Record<string, number> = { global: 0, universe: 0, site: 200, link: 253, host: 254 };

/** Mirrors every veth of the pod netns into a tap and collects addresses and routes for the guest. */
export async function attachPodNetwork(nsPath: string, queues = 1): Promise<PodNetwork> {
  const net: PodNetwork = { nsPath, nics: [], interfaces: [], routes: [] };
  try {
    for (const veth of (await links(nsPath)).filter((l) => l.kind === "veth")) {
      const tap = await connectTap(nsPath, veth, queues);
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
