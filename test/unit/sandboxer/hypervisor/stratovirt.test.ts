import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { recoverHypervisor } from "../../../../runtime/sandboxer/hypervisor/registry.ts";
import { stratovirtMachine, stratovirtPlan } from "../../../../runtime/sandboxer/hypervisor/stratovirt/plan.ts";
import type { HypervisorState } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { DIR, env, sandbox } from "../fixtures/driver-env.ts";
import { FakeQmp, STRATOVIRT_COMMANDS } from "../fixtures/fake-qmp.ts";
import { gone, standIn } from "../fixtures/procs.ts";

const sv = (toml = "") => parseConfig(`[hypervisor]\ntype = "stratovirt"\n${toml}`, "test.toml").config;
const rootPorts = (from: number) =>
  Array.from({ length: 10 }, (_, i) => {
    const a = `0x${(from + i).toString(16)}`;
    return ["-device", `pcie-root-port,port=${a},addr=${a},bus=pcie.0,id=pcie.${i + 1}`];
  }).flat();

describe("StratoVirt command lines", () => {
  test("defaults: q35 with shared memory, OVMF, initrd, vhost-vsock, vhost_user_fs share, root ports for hot-plug", () => {
    const plan = stratovirtPlan(sv(), sandbox, 1234);
    assert.equal(plan.vmm.path, "/usr/bin/stratovirt");
    assert.deepEqual(plan.vmm.args, [
      ...["-name", "sandbox-sb1", "-machine", "q35,mem-share=on", "-smp", "1", "-m", "1024M"],
      ...["-drive", "file=/usr/share/edk2/ovmf/OVMF_CODE.fd,if=pflash,unit=0,readonly=true"],
      ...["-kernel", "/var/lib/kuasar/vmlinux.bin"],
      "-append",
      // The shipped kernel_params come after the generated ones.
      "console=ttyS0 pcie_ports=native rdinit=/sbin/init panic=1 no_timer_check task.sharefs_type=virtiofs task.log_level=info " +
        "task.log_level=debug task.sharefs_type=virtiofs",
      ...["-initrd", "/var/lib/kuasar/kuasar.initrd"],
      ...["-qmp", `unix:${DIR}/qmp.sock,server,nowait`],
      ...["-chardev", `socket,id=console0,path=${DIR}/console.sock,server,nowait`, "-serial", "chardev:console0"],
      "-disable-seccomp",
      ...["-global", "pcie-root-port.fast-unplug=1"],
      ...["-object", "rng-random,id=rng0,filename=/dev/urandom"],
      ...["-device", "virtio-rng-pci,rng=rng0,id=virtio-rng0,bus=pcie.0,addr=0x1"],
      ...["-device", "vhost-vsock-pci,id=vsock-1234,guest-cid=1234,bus=pcie.0,addr=0x2"],
      ...["-chardev", `socket,id=virtio-fs0,path=${DIR}/virtiofs.sock`],
      ...["-device", "vhost-user-fs-pci,id=vhost-user-fs0,chardev=virtio-fs0,tag=kuasar,bus=pcie.0,addr=0x3"],
      ...rootPorts(4),
    ]);
    assert.deepEqual(
      plan.helpers.map((h) => [h.name, h.path, ...h.args]),
      [
        [
          "vhost_user_fs",
          "/usr/bin/vhost_user_fs",
          ...["-source", `${DIR}/shared`, "-socket-path", `${DIR}/virtiofs.sock`, "-D", `${DIR}/virtiofs.log`],
        ],
      ],
    );
    assert.deepEqual(plan.agentAddress, { kind: "vsock", cid: 1234, port: 1024 });
    // The serial console is a socket StratoVirt listens on; the daemon reads it into console.log.
    assert.equal(plan.consoleSocket, `${DIR}/console.sock`);
    assert.equal(plan.consoleLog, `${DIR}/console.log`);
    assert.deepEqual(plan.files, [`${DIR}/qmp.sock`, `${DIR}/virtiofs.sock`, `${DIR}/console.sock`]);
  });

  test("image on virtio-blk, taps, no firmware, debug logging through the environment", () => {
    const plan = stratovirtPlan(
      sv(
        'image_path = "/var/lib/kuasar/kuasar.img"\nfirmware = ""\nkernel_params = ""\nmachine_type = "q35"\ndebug = true\nhugepages = true\nenable_mem_prealloc = true\n',
      ),
      {
        ...sandbox,
        netDevices: [
          { tapName: "tap_kua_2", fds: [30, 31], mac: "02:42:ac:11:00:02", mtu: 1500 },
          { tapName: "tap_kua_4", fds: [32], mac: "02:42:ac:11:00:04", mtu: 1500 },
        ],
      },
      77,
      { partitioned: true, fsdax: true },
    );
    assert.deepEqual(plan.vmm.args.slice(0, 13), [
      ...["-name", "sandbox-sb1", "-machine", "q35,mem-share=on", "-smp", "1", "-m", "1024M"],
      ...["-mem-path", "/dev/hugepages", "-mem-prealloc"],
      ...["-kernel", "/var/lib/kuasar/vmlinux.bin"],
    ]);
    assert.equal(
      plan.vmm.args[14],
      "console=ttyS0 pcie_ports=native root=/dev/vda1 ro rootfstype=ext4 panic=1 no_timer_check task.sharefs_type=virtiofs task.log_level=info",
    );
    const devices = plan.vmm.args.filter((_, i, a) => i > 0 && ["-device", "-drive", "-netdev"].includes(a[i - 1]!));
    assert.deepEqual(devices.slice(0, 8), [
      "virtio-rng-pci,rng=rng0,id=virtio-rng0,bus=pcie.0,addr=0x1",
      "id=rootfs,file=/var/lib/kuasar/kuasar.img,readonly=on,direct=off",
      "virtio-blk-pci,drive=rootfs,id=blk-0,bus=pcie.0,addr=0x2",
      "vhost-vsock-pci,id=vsock-77,guest-cid=77,bus=pcie.0,addr=0x3",
      "vhost-user-fs-pci,id=vhost-user-fs0,chardev=virtio-fs0,tag=kuasar,bus=pcie.0,addr=0x4",
      "tap,id=net0,fds=3:4,queues=2",
      "virtio-net-pci,netdev=net0,id=nic0,mac=02:42:ac:11:00:02,mq=on,bus=pcie.0,addr=0x5",
      "tap,id=net1,fd=5",
    ]);
    assert.deepEqual(plan.vmm.fds, [30, 31, 32]);
    assert.deepEqual(plan.vmm.env, { STRATOVIRT_LOG_LEVEL: "debug" });
    assert.equal(plan.extra.rootPorts, "pcie.1,pcie.2,pcie.3,pcie.4,pcie.5,pcie.6,pcie.7,pcie.8,pcie.9,pcie.10");
  });

  test("microvm takes virtio-mmio devices without bus addresses or root ports", () => {
    const plan = stratovirtPlan(
      sv('machine_type = "microvm"\nblock_device_driver = "virtio-mmio"\nfirmware = ""\n'),
      sandbox,
      5,
    );
    const devices = plan.vmm.args.filter((_, i, a) => a[i - 1] === "-device");
    assert.deepEqual(devices, [
      "virtio-rng-device,rng=rng0,id=virtio-rng0",
      "vhost-vsock-device,id=vsock-5,guest-cid=5",
      "vhost-user-fs-device,id=vhost-user-fs0,chardev=virtio-fs0,tag=kuasar",
    ]);
    assert.ok(!plan.vmm.args.includes("-global"));
    assert.equal(plan.vmm.args[3], "microvm,mem-share=on");
  });

  test("mem-share=on is added only when missing", () => {
    assert.equal(stratovirtMachine("q35"), "q35,mem-share=on");
    assert.equal(
      stratovirtMachine("type=q35,mem-share=on,dump-guest-core=off"),
      "type=q35,mem-share=on,dump-guest-core=off",
    );
  });

  test("task.hybrid_vsock is never on the kernel command line: StratoVirt's vsock is vhost-vsock", () => {
    for (const toml of ["", 'machine_type = "microvm"\nblock_device_driver = "virtio-mmio"\nfirmware = ""\n']) {
      const plan = stratovirtPlan(sv(toml), sandbox, 5);
      const words = plan.vmm.args[plan.vmm.args.indexOf("-append") + 1]!.split(" ");
      assert.deepEqual(
        words.filter((w) => w.startsWith("task.hybrid_vsock")),
        [],
      );
      assert.equal(plan.agentAddress.kind, "vsock");
    }
  });
});

describe("StratoVirt driver over its QMP", () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "kuasar-sv-"));
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  test("hot-plug onto free root ports, removal, and stop by quit (StratoVirt has no ACPI power-off command)", {
    timeout: 60_000,
  }, async () => {
    const sock = path.join(tmp, "qmp.sock");
    const qmp = new FakeQmp(sock, STRATOVIRT_COMMANDS, { StratoVirt: { major: 2, minor: 4, micro: 0 }, package: "" });
    await qmp.listen();
    const vmm = await standIn();
    const helper = await standIn();
    qmp.on("device_del", (args, q) => {
      q.emit("DEVICE_DELETED", { device: args.id, path: args.id });
      return undefined;
    });
    qmp.on("quit", (_a, q) => {
      setTimeout(() => {
        q.emit("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
        vmm.child.kill("SIGTERM");
      }, 20);
      return undefined;
    });
    const state: HypervisorState = {
      kind: "stratovirt",
      id: "sb1",
      dir: tmp,
      vmm: vmm.ref,
      helpers: [{ name: "vhost_user_fs", ...helper.ref }],
      agentAddress: { kind: "vsock", cid: 77, port: 1024 },
      consoleLog: path.join(tmp, "console.log"),
      controlSocket: sock,
      files: [],
      devices: {},
      extra: { micro: false, rootPorts: "pcie.1,pcie.2" },
    };
    try {
      const vm = await recoverHypervisor(state, env);
      await vm.hotplugDisk({ id: "d1", path: "/dev/dm-8", readOnly: false });
      await vm.hotplugDisk({ id: "d2", path: "/dev/dm-9", readOnly: true });
      await assert.rejects(
        vm.hotplugDisk({ id: "d3", path: "/dev/dm-10", readOnly: true }),
        /all PCIe root ports are in use/,
      );
      await vm.removeDevice("d1");
      await vm.hotplugDisk({ id: "d3", path: "/dev/dm-10", readOnly: true });
      const sent = qmp.received.filter((r) => r.execute !== "qmp_capabilities");
      assert.deepEqual(sent.slice(0, 2), [
        {
          execute: "blockdev-add",
          arguments: {
            "node-name": "drive-d1",
            file: { driver: "file", filename: "/dev/dm-8" },
            cache: { direct: true },
            "read-only": false,
          },
        },
        {
          execute: "device_add",
          arguments: {
            id: "d1",
            driver: "virtio-blk-pci",
            bus: "pcie.1",
            addr: "0x0",
            drive: "drive-d1",
            serial: "d1",
          },
        },
      ]);
      assert.deepEqual(
        sent.slice(4).map((r) => [r.execute, r.arguments?.id ?? r.arguments?.["node-name"], r.arguments?.bus]),
        [
          ["device_del", "d1", undefined],
          ["blockdev-del", "drive-d1", undefined],
          ["blockdev-add", "drive-d3", undefined],
          ["device_add", "d3", "pcie.1"],
        ],
      );
      // system_powerdown is refused, so there is nothing to wait for before quit: a driver that waited out the
      // guest's day-long timeout would hang here until the test's timeout.
      const exit = await vm.stop(24 * 3600_000);
      assert.equal(exit.exitStatus, 0);
      assert.deepEqual(
        qmp.received.slice(-2).map((r) => r.execute),
        ["system_powerdown", "quit"],
      );
      await gone(helper.child);
    } finally {
      vmm.child.kill("SIGKILL");
      helper.child.kill("SIGKILL");
      await qmp.close();
    }
  });
});
