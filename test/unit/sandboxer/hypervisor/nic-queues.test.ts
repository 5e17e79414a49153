import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { clhPlan } from "../../../../runtime/sandboxer/hypervisor/cloud-hypervisor/plan.ts";
import { type QemuFacts, qemuPlan } from "../../../../runtime/sandboxer/hypervisor/qemu/plan.ts";
import { stratovirtPlan } from "../../../../runtime/sandboxer/hypervisor/stratovirt/plan.ts";
import type { NetDevice, SandboxSpec } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { sandbox } from "../fixtures/driver-env.ts";

// The NIC part of each VMM's command line for the taps the launcher makes: opened by name inside the pod netns,
// with one queue per vCPU (NetDevice.queues), and the fd form the plans also take.
const config = (type: string, toml = "") => parseConfig(`[hypervisor]\ntype = "${type}"\n${toml}`, "t.toml").config;
const TCG: QemuFacts = { accel: "tcg", vsock: "hybrid", cid: 7, vhostNet: false, hostMemMiB: 24000, imageBytes: 8192 };
const KVM: QemuFacts = { accel: "kvm", vsock: "vhost", cid: 7, vhostNet: true, hostMemMiB: 24000, imageBytes: 8192 };
const tap = (queues?: number, fds?: number[]): NetDevice => ({
  tapName: "tap_kua_2",
  mac: "02:42:ac:11:00:02",
  mtu: 1500,
  ...(queues === undefined ? {} : { queues }),
  ...(fds ? { fds } : {}),
});
const pod = (nic: NetDevice, vcpus = 2): SandboxSpec => ({
  ...sandbox,
  vcpus,
  netnsPath: "/var/run/netns/cni-1",
  netDevices: [nic],
});

/** The value after each occurrence of flag. */
const values = (args: string[], flag: string) => args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));

describe("QEMU NIC queues", () => {
  test("a tap opened by name with 2 queues: queues=2 on the netdev, mq=on and 2*2+2 vectors on the device", () => {
    const plan = qemuPlan(config("qemu"), pod(tap(2)), TCG);
    assert.deepEqual(values(plan.vmm.args, "-netdev"), [
      "tap,id=net0,ifname=tap_kua_2,script=no,downscript=no,queues=2",
    ]);
    assert.deepEqual(
      values(plan.vmm.args, "-device").filter((d) => d.startsWith("virtio-net")),
      ["virtio-net-pci,netdev=net0,mac=02:42:ac:11:00:02,id=nic0,mq=on,vectors=6"],
    );
    assert.deepEqual(plan.vmm.fds, []);
    assert.equal(plan.vmm.netnsPath, "/var/run/netns/cni-1", "QEMU opens the tap inside the pod netns");
  });

  test("4 queues with vhost-net under KVM; given fds, one queue per fd", () => {
    const byName = qemuPlan(config("qemu"), pod(tap(4), 4), KVM);
    assert.deepEqual(values(byName.vmm.args, "-netdev"), [
      "tap,id=net0,ifname=tap_kua_2,script=no,downscript=no,queues=4,vhost=on",
    ]);
    assert.match(values(byName.vmm.args, "-device").join(" "), /id=nic0,mq=on,vectors=10/);
    const withFds = qemuPlan(config("qemu"), pod(tap(undefined, [40, 41, 42])), TCG);
    assert.deepEqual(values(withFds.vmm.args, "-netdev"), ["tap,id=net0,fds=3:4:5"]);
    assert.match(values(withFds.vmm.args, "-device").join(" "), /id=nic0,mq=on,vectors=8/);
    assert.deepEqual(withFds.vmm.fds, [40, 41, 42]);
  });

  test("one queue (or none given) leaves the NIC single-queue", () => {
    for (const nic of [tap(1), tap()]) {
      const args = qemuPlan(config("qemu"), pod(nic), TCG).vmm.args;
      assert.deepEqual(values(args, "-netdev"), ["tap,id=net0,ifname=tap_kua_2,script=no,downscript=no"]);
      assert.doesNotMatch(values(args, "-device").join(" "), /mq=on|vectors/);
    }
  });

  test("microvm's virtio-mmio NIC takes mq=on but has no MSI-X vectors", () => {
    const args = qemuPlan(
      config("qemu", 'machine_type = "microvm"\nblock_device_driver = "VirtioMmio"\n'),
      pod(tap(2)),
      TCG,
    ).vmm.args;
    assert.deepEqual(
      values(args, "-device").filter((d) => d.startsWith("virtio-net")),
      ["virtio-net-device,netdev=net0,mac=02:42:ac:11:00:02,id=nic0,mq=on"],
    );
  });
});

describe("cloud-hypervisor NIC queues", () => {
  test("num_queues counts rx and tx: 2 tap queues are num_queues=4, by name or by fds", () => {
    assert.deepEqual(values(clhPlan(config("cloud-hypervisor"), pod(tap(2)), "rust").vmm.args, "--net"), [
      "tap=tap_kua_2,mac=02:42:ac:11:00:02,num_queues=4",
    ]);
    assert.deepEqual(values(clhPlan(config("cloud-hypervisor"), pod(tap(1)), "rust").vmm.args, "--net"), [
      "tap=tap_kua_2,mac=02:42:ac:11:00:02",
    ]);
    assert.deepEqual(
      values(clhPlan(config("cloud-hypervisor"), pod(tap(undefined, [9, 10])), "rust").vmm.args, "--net"),
      ["fd=[3,4],mac=02:42:ac:11:00:02,num_queues=4"],
    );
  });
});

describe("StratoVirt NIC queues", () => {
  test("a tap opened by name with 2 queues: queues=2 on the netdev and mq=on on the PCI device", () => {
    const args = stratovirtPlan(config("stratovirt"), pod(tap(2)), 77).vmm.args;
    assert.deepEqual(values(args, "-netdev"), ["tap,id=net0,ifname=tap_kua_2,queues=2"]);
    assert.match(values(args, "-device").join(" "), /virtio-net-pci,netdev=net0,id=nic0,mac=02:42:ac:11:00:02,mq=on,/);
  });

  test("microvm's virtio-mmio NIC: one queue works, more is refused by name (nicQueues never asks for it)", () => {
    const micro = config("stratovirt", 'machine_type = "microvm"\nblock_device_driver = "VirtioMmio"\n');
    assert.deepEqual(values(stratovirtPlan(micro, pod(tap(1)), 77).vmm.args, "-netdev"), [
      "tap,id=net0,ifname=tap_kua_2",
    ]);
    assert.throws(
      () => stratovirtPlan(micro, pod(tap(2)), 77),
      /sandbox sb1: NIC tap_kua_2 has 2 queues; StratoVirt's virtio-mmio NIC takes one/,
    );
  });
});
