import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";
import { IPFamily } from "../../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import type { Config } from "../../../../runtime/sandboxer/config/schema.ts";
import { inNetns } from "../../../../runtime/sandboxer/network/netns.ts";
import { attachPodNetwork, detachPodNetwork } from "../../../../runtime/sandboxer/network/pod-network.ts";
import { nicQueues } from "../../../../runtime/sandboxer/network/queues.ts";
import { MAX_TAP_QUEUES } from "../../../../runtime/sandboxer/network/tap.ts";

// A pod netns with a veth, and neighbour entries of every kind: only the permanent ones reach the guest.
const ns = `kuasar-neightest-${process.pid}`;
const nsPath = `/var/run/netns/${ns}`;
const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" }).toString();

before(() => {
  ip("netns", "add", ns);
  ip("link", "add", `kn${process.pid}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
  ip("-n", ns, "link", "set", "eth0", "up");
  ip("-n", ns, "addr", "add", "10.88.9.2/24", "dev", "eth0");
  ip("-n", ns, "neigh", "add", "10.88.9.1", "lladdr", "02:00:0a:58:09:01", "dev", "eth0", "nud", "permanent");
  ip("-n", ns, "neigh", "add", "fd00:88::1", "lladdr", "02:00:0a:58:09:02", "dev", "eth0", "nud", "permanent");
  ip("-n", ns, "neigh", "add", "10.88.9.7", "lladdr", "02:00:0a:58:09:07", "dev", "eth0", "nud", "stale");
});

after(() => ip("netns", "del", ns));

async function tapInfo(tap: string): Promise<{ multi_queue: boolean }> {
  const [link] = JSON.parse(await inNetns(nsPath, "ip", ["-d", "-j", "link", "show", "dev", tap])) as Array<{
    linkinfo: { info_data: { multi_queue: boolean } };
  }>;
  return link!.linkinfo.info_data;
}

test("the veth's permanent neighbours, v4 and v6, are collected for the guest; stale ones are not", async () => {
  const net = await attachPodNetwork(nsPath);
  try {
    assert.deepEqual(
      net.neighbors.map((n) => [n.toIPAddress?.family, n.toIPAddress?.address, n.lladdr, n.device]),
      [
        [IPFamily.v4, "10.88.9.1", "02:00:0a:58:09:01", "eth0"],
        [IPFamily.v6, "fd00:88::1", "02:00:0a:58:09:02", "eth0"],
      ],
    );
    assert.equal(net.queues, 1);
    assert.equal((await tapInfo(net.nics[0]!.tap)).multi_queue, false, "one queue: a plain tap");
  } finally {
    await detachPodNetwork(net);
  }
});

test("more than one queue makes the tap multi-queue", async () => {
  const net = await attachPodNetwork(nsPath, 2);
  try {
    assert.equal(net.queues, 2);
    assert.equal((await tapInfo(net.nics[0]!.tap)).multi_queue, true);
  } finally {
    await detachPodNetwork(net);
  }
});

test("a queue count outside 1..256 is refused before any tap is made", async () => {
  for (const bad of [0, 1.5, MAX_TAP_QUEUES + 1]) {
    await assert.rejects(attachPodNetwork(nsPath, bad), /tap queues must be an integer from 1 to 256/);
  }
  const names = JSON.parse(await inNetns(nsPath, "ip", ["-j", "link", "show"])) as Array<{ ifname: string }>;
  assert.deepEqual(
    names.map((l) => l.ifname).filter((n) => n.startsWith("tap_kua_")),
    [],
  );
});

test("NIC queues: one per vCPU up to the kernel's limit; StratoVirt's virtio-mmio NIC has one", () => {
  const cfg = (type: string, machine_type: string) => ({ hypervisor: { type, machine_type } }) as unknown as Config;
  assert.equal(nicQueues(cfg("qemu", "pc"), 1), 1);
  assert.equal(nicQueues(cfg("qemu", "pc"), 4), 4);
  assert.equal(nicQueues(cfg("qemu", "microvm"), 2), 2);
  assert.equal(nicQueues(cfg("cloud-hypervisor", ""), 3), 3);
  assert.equal(nicQueues(cfg("qemu", "q35"), 1000), MAX_TAP_QUEUES);
  assert.equal(nicQueues(cfg("stratovirt", "q35,mem-share=on"), 2), 2);
  assert.equal(nicQueues(cfg("stratovirt", "microvm,mem-share=on"), 2), 1);
  assert.equal(nicQueues(cfg("stratovirt", "type=microvm"), 2), 1);
});
