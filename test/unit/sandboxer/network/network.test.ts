import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";
import { IPFamily } from "../../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { inNetns, links } from "../../../../runtime/sandboxer/network/netns.ts";
import { attachPodNetwork, detachPodNetwork } from "../../../../runtime/sandboxer/network/pod-network.ts";

// A pod netns wired the way the CNI bridge/ptp plugins leave it: a veth with an address and a default route.
const ns = `kuasar-nettest-${process.pid}`;
const nsPath = `/var/run/netns/${ns}`;
const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" }).toString();

before(() => {
  ip("netns", "add", ns);
  ip("link", "add", `kv${process.pid}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
  ip("-n", ns, "link", "set", "eth0", "mtu", "1450", "up");
  ip("-n", ns, "addr", "add", "10.88.7.2/24", "dev", "eth0");
  ip("-n", ns, "route", "add", "default", "via", "10.88.7.1");
});

// Deleting the netns takes the veth pair with it.
after(() => ip("netns", "del", ns));

test("attach mirrors the veth into a tap and reports its address and routes; detach removes it", async () => {
  const net = await attachPodNetwork(nsPath);
  const veth = (await links(nsPath)).find((l) => l.ifname === "eth0")!;
  assert.equal(net.nics.length, 1);
  assert.deepEqual(net.nics[0], {
    tap: `tap_kua_${veth.ifindex}`,
    veth: "eth0",
    ifindex: veth.ifindex,
    mac: veth.address,
    mtu: 1450,
  });
  const tap = (await links(nsPath)).find((l) => l.ifname === net.nics[0]!.tap);
  assert.equal(tap?.mtu, 1450);
  for (const dev of ["eth0", net.nics[0]!.tap]) {
    const filters = await inNetns(nsPath, "tc", ["filter", "show", "dev", dev, "ingress"]);
    assert.match(filters, /mirred \(Egress Redirect to device/);
  }
  const iface = net.interfaces[0]!;
  assert.equal(iface.hwAddr, veth.address);
  assert.equal(iface.mtu, 1450n);
  assert.deepEqual(
    iface.IPAddresses.map((a) => [a.family, a.address, a.mask]),
    [[IPFamily.v4, "10.88.7.2", "24"]],
  );
  assert.deepEqual(
    net.routes.map((r) => [r.dest, r.gateway, r.device]),
    [["", "10.88.7.1", "eth0"]],
  );

  await detachPodNetwork(net);
  const names = (await links(nsPath)).map((l) => l.ifname);
  assert.ok(!names.includes(net.nics[0]!.tap), `tap still present: ${names}`);
  assert.equal(await inNetns(nsPath, "tc", ["qdisc", "show", "dev", "eth0", "ingress"]), "");
});

test("a netns path that does not exist is a clear error naming it", async () => {
  await assert.rejects(attachPodNetwork("/var/run/netns/does-not-exist"), /netns \/var\/run\/netns\/does-not-exist/);
});
