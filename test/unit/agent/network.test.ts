import assert from "node:assert/strict";
import { before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { execa } from "execa";
import {
  checkInterface,
  checkRoute,
  configureNeighbours,
  configureRoutes,
  MAX_NEIGHBOURS,
} from "../../../runtime/agent/network.ts";
import type { NetlinkAddon } from "../../../runtime/native/ns/netlink.ts";
import {
  type ARPNeighbor,
  ARPNeighborSchema,
  InterfaceSchema,
  IPFamily,
  RouteSchema,
} from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import * as h from "./harness.ts";

before(() => h.addonsReady());

const neighbour = (address: string, family = IPFamily.v4, lladdr = "02:00:0a:58:09:01", device = "eth0") =>
  create(ARPNeighborSchema, { toIPAddress: { family, address }, lladdr, device });

/** Records what would reach netlink: each call as its name and arguments. */
function recorder(): NetlinkAddon & { calls: unknown[][] } {
  const calls: unknown[][] = [];
  return {
    calls,
    neighReplace: (...a) => void calls.push(["neigh", ...a]),
    linkSet: (...a) => void calls.push(["link", ...a]),
    addrAdd: (...a) => void calls.push(["addr", ...a]),
    routeReplace: (...a) => void calls.push(["route", ...a]),
  };
}

test("neighbours are installed one by one, v4 and v6", async () => {
  const addon = recorder();
  configureNeighbours(
    [neighbour("10.88.9.1"), neighbour("fd00:88::1", IPFamily.v6, "02:00:0A:58:09:02", "net1.100")],
    addon,
  );
  assert.deepEqual(addon.calls, [
    ["neigh", "10.88.9.1", "02:00:0a:58:09:01", "eth0"],
    ["neigh", "fd00:88::1", "02:00:0A:58:09:02", "net1.100"],
  ]);
  configureNeighbours([], addon);
  assert.equal(addon.calls.length, 2, "no entries, no netlink");
});

// The host is the sender, and every field becomes a netlink request or an `ip` argument: a field not of its form
// (an option, a second argument, a path, the wrong family) is refused before anything is set, the good ones too.
test("attack: a neighbour with any malformed field is refused and nothing is installed", async () => {
  const bad: Array<[ARPNeighbor, RegExp]> = [
    [neighbour("10.88.9.300"), /neighbour "10.88.9.300": "10.88.9.300" is not an IPv4 address/],
    [neighbour("10.88.9.1/32"), /is not an IPv4 address/],
    [neighbour("fd00::1"), /"fd00::1" is not an IPv4 address/],
    [neighbour("10.88.9.1", IPFamily.v6), /"10.88.9.1" is not an IPv6 address/],
    [neighbour("fe80::1%eth0", IPFamily.v6), /is not an IPv6 address/],
    [neighbour("10.88.9.1", 7 as IPFamily), /address family 7 is neither v4 nor v6/],
    [neighbour("-s"), /is not an IPv4 address/],
    [neighbour("10.88.9.1", IPFamily.v4, "02:00:0a:58:09:0g"), /lladdr: "02:00:0a:58:09:0g" is not a MAC address/],
    [neighbour("10.88.9.1", IPFamily.v4, "+2:00:0a:58:09:01"), /is not a MAC address/],
    [neighbour("10.88.9.1", IPFamily.v4, "02-00-0a-58-09-01"), /is not a MAC address/],
    [neighbour("10.88.9.1", IPFamily.v4, "02:00:0a:58:09:01:ff"), /is not a MAC address/],
    [neighbour("10.88.9.1", IPFamily.v4, undefined, "-all"), /device: "-all" is not a link name/],
    [neighbour("10.88.9.1", IPFamily.v4, undefined, "eth0 up"), /is not a link name/],
    [neighbour("10.88.9.1", IPFamily.v4, undefined, "../eth0"), /is not a link name/],
    [neighbour("10.88.9.1", IPFamily.v4, undefined, "a234567890123456"), /is not a link name/],
    [neighbour("10.88.9.1", IPFamily.v4, undefined, ""), /is not a link name/],
    [create(ARPNeighborSchema, { lladdr: "02:00:0a:58:09:01", device: "eth0" }), /toIPAddress is missing/],
  ];
  for (const [n, why] of bad) {
    const addon = recorder();
    assert.throws(() => configureNeighbours([neighbour("10.88.9.1"), n], addon), why);
    assert.deepEqual(addon.calls, [], `nothing installed for ${JSON.stringify(n.toIPAddress?.address)}`);
  }
  const addon = recorder();
  const flood = Array.from({ length: MAX_NEIGHBOURS + 1 }, () => neighbour("10.88.9.1"));
  assert.throws(() => configureNeighbours(flood, addon), /1025 neighbour entries sent; at most 1024/);
  assert.deepEqual(addon.calls, []);
});

test("attack: interfaces and routes with a malformed field are refused", () => {
  const itf = (o: Record<string, unknown>) =>
    create(InterfaceSchema, {
      name: "eth0",
      hwAddr: "02:00:0a:58:09:02",
      IPAddresses: [{ family: IPFamily.v4, address: "10.88.9.2", mask: "24" }],
      ...o,
    });
  checkInterface(itf({}));
  checkInterface(itf({ mtu: 9000n, IPAddresses: [{ family: IPFamily.v6, address: "fd00::2", mask: "64" }] }));
  for (const [o, why] of [
    [{ name: "-x" }, /interface "-x" name: "-x" is not a link name/],
    [{ name: "eth0;reboot" }, /is not a link name/],
    [{ hwAddr: "zz" }, /hwAddr: "zz" is not a MAC address/],
    [{ mtu: 70000n }, /mtu: 70000 is outside 68..65535/],
    [{ IPAddresses: [{ family: IPFamily.v4, address: "10.88.9.2 dev lo", mask: "24" }] }, /is not an IPv4/],
    [{ IPAddresses: [{ family: IPFamily.v4, address: "10.88.9.2", mask: "33" }] }, /prefix length "33"/],
    [{ IPAddresses: [{ family: IPFamily.v4, address: "10.88.9.2", mask: "-1" }] }, /prefix length "-1"/],
  ] as const) {
    assert.throws(() => checkInterface(itf(o)), why);
  }

  const route = (o: Record<string, unknown>) =>
    create(RouteSchema, { dest: "10.96.0.0/12", gateway: "10.88.9.1", device: "eth0", family: IPFamily.v4, ...o });
  checkRoute(route({}));
  checkRoute(route({ dest: "" }));
  checkRoute(route({ dest: "10.88.9.7", gateway: "", source: "10.88.9.2", scope: 253 }));
  checkRoute(route({ dest: "fd00::/64", gateway: "fe80::1", family: IPFamily.v6 }));
  for (const [o, why] of [
    [{ dest: "10.96.0.0/12/3" }, /dest is not address\/prefix/],
    [{ dest: "10.96.0.0/40" }, /prefix length "40"/],
    [{ dest: "default" }, /"default" is not an IPv4 address/],
    [{ gateway: "fd00::1" }, /gateway: "fd00::1" is not an IPv4 address/],
    [{ source: "-6" }, /source: "-6" is not an IPv4 address/],
    [{ device: "--help" }, /device: "--help" is not a link name/],
  ] as const) {
    assert.throws(() => checkRoute(route(o)), why);
  }
});

test("the addon installs permanent neighbours with netlink, and names what it refuses", async () => {
  const script = `
    const { configureNeighbours } = await import(${JSON.stringify(`${h.repo}/runtime/agent/network.ts`)});
    const n = (address, family, lladdr, device = "vb") => ({ toIPAddress: { family, address }, lladdr, device });
    configureNeighbours([n("10.9.0.7", 0, "02:00:00:00:00:07"), n("fd00::7", 1, "02:00:00:00:00:08")]);
    // replaced, not duplicated
    configureNeighbours([n("10.9.0.7", 0, "02:00:00:00:00:17")]);
    try { configureNeighbours([n("10.9.0.8", 0, "02:00:00:00:00:09", "nope")]); } catch (e) { console.log(e.code, e.message); }
  `;
  const r = await execa(
    "unshare",
    [
      "--net",
      "sh",
      "-ec",
      `ip link add va type veth peer name vb; ip link set vb up
       node --import tsx --input-type=module -e "$0"; ip -j neigh show dev vb`,
      script,
    ],
    { reject: false, cwd: h.repo },
  );
  assert.equal(r.exitCode, 0, r.stderr);
  const [refusal, json] = r.stdout.split("\n");
  assert.equal(refusal, "ENODEV neighbour 10.9.0.8 lladdr 02:00:00:00:00:09 dev nope: ENODEV (No such device)");
  assert.deepEqual(
    (JSON.parse(json!) as Array<{ dst: string; lladdr: string; state: string[] }>)
      .map((e) => [e.dst, e.lladdr, e.state.join()])
      .sort(),
    [
      ["10.9.0.7", "02:00:00:00:00:17", "PERMANENT"],
      ["fd00::7", "02:00:00:00:00:08", "PERMANENT"],
    ],
  );
});

test("routes: link routes before gateway routes, prefixes completed, scope link where `ip route` would pick it", async () => {
  const addon = recorder();
  const route = (o: Record<string, unknown>) => create(RouteSchema, { family: IPFamily.v4, device: "eth0", ...o });
  configureRoutes(
    [
      route({ dest: "", gateway: "10.88.9.1" }),
      route({ dest: "10.88.9.0/24", source: "10.88.9.2" }),
      route({ dest: "10.88.9.7", gateway: "10.88.9.1", scope: 253 }),
      route({ dest: "fd00::/64", gateway: "", family: IPFamily.v6, device: "" }),
      route({ dest: "fd00:1::1", gateway: "fd00::1", family: IPFamily.v6 }),
    ],
    addon,
  );
  assert.deepEqual(addon.calls, [
    ["route", 4, "10.88.9.0", 24, "", "eth0", "10.88.9.2", true],
    ["route", 6, "fd00::", 64, "", "", "", true],
    ["route", 4, "", 0, "10.88.9.1", "eth0", "", false],
    ["route", 4, "10.88.9.7", 32, "10.88.9.1", "eth0", "", true],
    ["route", 6, "fd00:1::1", 128, "fd00::1", "eth0", "", false],
  ]);
});

/** Runs script (an ES module) with the real addon in a network namespace of its own, after setup (sh); its stdout. */
async function inNetns(setup: string, script: string, after: string): Promise<string> {
  const r = await execa(
    "unshare",
    [
      "--net",
      "--mount",
      "sh",
      "-ec",
      // sysfs shows the links of the namespace it was mounted in.
      `mount -t sysfs sysfs /sys; ${setup}
       node --import tsx --input-type=module -e "$0"; ${after}`,
      script,
    ],
    { reject: false, cwd: h.repo },
  );
  assert.equal(r.exitCode, 0, r.stderr);
  return r.stdout;
}

test("interfaces and routes reach the kernel through netlink: renamed by MAC, MTU, v4 and v6 addresses, up", async () => {
  const script = `
    const { configureInterfaces, configureRoutes } = await import(${JSON.stringify(`${h.repo}/runtime/agent/network.ts`)});
    const itf = { name: "eth0", hwAddr: "02:00:0A:58:09:02", mtu: 1400n, IPAddresses: [
      { family: 0, address: "10.88.9.2", mask: "24" }, { family: 1, address: "fd00:88::2", mask: "64" }] };
    configureInterfaces([itf]);
    configureInterfaces([itf]); // UpdateInterfaces sent again: the same state, no error
    configureRoutes([
      { family: 0, dest: "", gateway: "10.88.9.1", device: "eth0", source: "", scope: 0 },
      { family: 0, dest: "10.96.0.0/12", gateway: "10.88.9.1", device: "eth0", source: "10.88.9.2", scope: 0 },
      { family: 1, dest: "fd00:96::/64", gateway: "fd00:88::1", device: "eth0", source: "", scope: 0 },
    ]);
    try {
      configureRoutes([{ family: 0, dest: "10.1.0.0/16", gateway: "", device: "nope", source: "", scope: 0 }]);
    } catch (e) { console.log(e.code, e.message); }
  `;
  const out = await inNetns(
    "ip link add veth7 address 02:00:0a:58:09:02 type veth peer name peer7",
    script,
    "ip -j link show; ip -j addr show dev eth0; ip -j route show; ip -j -6 route show dev eth0",
  );
  const [refusal, links, addrs, routes, routes6] = out.split("\n");
  assert.equal(refusal, "ENODEV route 10.1.0.0/16 dev nope: ENODEV (No such device)");
  const byName = new Map(
    (JSON.parse(links!) as Array<{ ifname: string; mtu: number; flags: string[] }>).map((l) => [l.ifname, l]),
  );
  assert.ok(!byName.has("veth7"), "renamed");
  assert.equal(byName.get("eth0")?.mtu, 1400);
  assert.ok(byName.get("eth0")?.flags.includes("UP"));
  assert.ok(byName.get("lo")?.flags.includes("UP"));
  const a = JSON.parse(addrs!) as Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>;
  assert.deepEqual(
    a[0]!.addr_info.map((i) => `${i.local}/${i.prefixlen}`).filter((x) => !x.startsWith("fe80")),
    ["10.88.9.2/24", "fd00:88::2/64"],
  );
  const r4 = (JSON.parse(routes!) as Array<{ dst: string; gateway?: string; prefsrc?: string; dev: string }>).map((r) =>
    [r.dst, r.gateway ?? "", r.prefsrc ?? "", r.dev].join(" "),
  );
  assert.ok(r4.includes("default 10.88.9.1  eth0"), r4.join("; "));
  assert.ok(r4.includes("10.96.0.0/12 10.88.9.1 10.88.9.2 eth0"), r4.join("; "));
  const r6 = (JSON.parse(routes6!) as Array<{ dst: string; gateway?: string }>).map(
    (r) => `${r.dst} ${r.gateway ?? ""}`,
  );
  assert.ok(r6.includes("fd00:96::/64 fd00:88::1"), r6.join("; "));
});

// The checks in network.ts come first, but the addon is the last word on what reaches the kernel.
test("attack: the netlink addon refuses malformed arguments itself and names them", async () => {
  const script = `
    const { netlinkAddon } = await import(${JSON.stringify(`${h.repo}/runtime/native/ns/netlink.ts`)});
    const nl = netlinkAddon();
    const tries = [
      () => nl.addrAdd("lo", "10.0.0.1", 33),
      () => nl.addrAdd("lo", "10.0.0.1 dev eth0", 8),
      () => nl.addrAdd("lo", "10.0.0.1", "8"),
      () => nl.linkSet("lo", 2, "", 0),
      () => nl.linkSet("lo", 0, "a-name-far-too-long", 0),
      () => nl.linkSet("a-name-far-too-long", 1, "", 0),
      () => nl.linkSet("nope", -1, "", 9000),
      () => nl.routeReplace(4, "fd00::", 64, "", "lo", "", true),
      () => nl.routeReplace(4, "", 8, "", "lo", "", true),
      () => nl.routeReplace(5, "", 0, "", "lo", "", true),
      () => nl.routeReplace(4, "10.0.0.0", 8, "10.0.0.1", "lo", "", "yes"),
      () => nl.neighReplace("10.0.0.1", "02:00:00:00:00:0g", "lo"),
    ];
    for (const t of tries) {
      try { t(); console.log("accepted"); } catch (e) { console.log(e.code, e.message); }
    }
  `;
  const lines = (await inNetns("", script, "")).split("\n");
  assert.deepEqual(lines, [
    "EINVAL address 10.0.0.1/33 dev lo: EINVAL (Invalid argument)",
    "EINVAL address 10.0.0.1 dev eth0/8 dev lo: EINVAL (Invalid argument)",
    "EINVAL ns addon: prefixLen must be an integer from 0 to 128",
    "EINVAL ns addon: up must be an integer from -1 to 1",
    "EINVAL link lo down name a-name-far-too-long: EINVAL (Invalid argument)",
    "ENODEV link a-name-far-too-long up: ENODEV (No such device)",
    "ENODEV link nope mtu 9000: ENODEV (No such device)",
    "EINVAL route fd00::/64 dev lo: EINVAL (Invalid argument)",
    "EINVAL route default/8 dev lo: EINVAL (Invalid argument)",
    "EINVAL route default/0 dev lo: EINVAL (Invalid argument)",
    "EINVAL ns addon: linkScope must be a boolean",
    "EINVAL neighbour 10.0.0.1 lladdr 02:00:00:00:00:0g dev lo: EINVAL (Invalid argument)",
  ]);
});
