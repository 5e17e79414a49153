import assert from "node:assert/strict";
import { before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { execa } from "execa";
import { checkInterface, checkRoute, configureNeighbours, MAX_NEIGHBOURS } from "../../../runtime/agent/network.ts";
import type { NeighAddon } from "../../../runtime/native/ns/neigh.ts";
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

/** Records what would reach netlink. */
function recorder(): NeighAddon & { calls: string[][] } {
  const calls: string[][] = [];
  return { calls, neighReplace: (ip, mac, dev) => void calls.push([ip, mac, dev]) };
}

test("neighbours are installed one by one, v4 and v6", async () => {
  const addon = recorder();
  await configureNeighbours(
    [neighbour("10.88.9.1"), neighbour("fd00:88::1", IPFamily.v6, "02:00:0A:58:09:02", "net1.100")],
    addon,
  );
  assert.deepEqual(addon.calls, [
    ["10.88.9.1", "02:00:0a:58:09:01", "eth0"],
    ["fd00:88::1", "02:00:0A:58:09:02", "net1.100"],
  ]);
  await configureNeighbours([], addon);
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
    await assert.rejects(configureNeighbours([neighbour("10.88.9.1"), n], addon), why);
    assert.deepEqual(addon.calls, [], `nothing installed for ${JSON.stringify(n.toIPAddress?.address)}`);
  }
  const addon = recorder();
  const flood = Array.from({ length: MAX_NEIGHBOURS + 1 }, () => neighbour("10.88.9.1"));
  await assert.rejects(configureNeighbours(flood, addon), /1025 neighbour entries sent; at most 1024/);
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
    await configureNeighbours([n("10.9.0.7", 0, "02:00:00:00:00:07"), n("fd00::7", 1, "02:00:00:00:00:08")]);
    // replaced, not duplicated
    await configureNeighbours([n("10.9.0.7", 0, "02:00:00:00:00:17")]);
    await configureNeighbours([n("10.9.0.8", 0, "02:00:00:00:00:09", "nope")]).catch((e) => console.log(e.code, e.message));
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
