import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { chooseAccelerator, type HostProbes, virtiofsdDialect } from "../../../../runtime/sandboxer/hypervisor/host.ts";
import { parseAccelerators } from "../../../../runtime/sandboxer/hypervisor/qemu/accelerator.ts";
import { qemuStartRetryable } from "../../../../runtime/sandboxer/hypervisor/qemu/driver.ts";
import { type QemuFacts, qemuPlan } from "../../../../runtime/sandboxer/hypervisor/qemu/plan.ts";
import { chooseVsock } from "../../../../runtime/sandboxer/hypervisor/qemu/vsock.ts";
import { DIR, sandbox } from "../fixtures/driver-env.ts";

const qemu = (toml = "") => parseConfig(`[hypervisor]\ntype = "qemu"\n${toml}`, "test.toml").config;
/** kuasar.img's layout: ext4 in partition 1, an fsdax info block. */
const KUASAR_IMAGE = { partitioned: true, fsdax: true };
const TCG_HYBRID: QemuFacts = {
  accel: "tcg",
  vsock: "hybrid",
  cid: 7,
  vhostNet: false,
  hostMemMiB: 24000,
  imageBytes: 150 * 1048576,
  imageLayout: KUASAR_IMAGE,
};

/** The arguments as "-flag value" lines, which keeps goldens readable and diffs short. */
function lines(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    if (next !== undefined && !next.startsWith("-")) {
      out.push(`${a} ${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

describe("QEMU command lines", () => {
  test("defaults: image as a read-only DAX NVDIMM, 9p share, hybrid vsock, tcg", () => {
    const plan = qemuPlan(qemu(), sandbox, TCG_HYBRID);
    assert.equal(plan.vmm.path, "/usr/bin/qemu-system-x86_64");
    assert.deepEqual(lines(plan.vmm.args), [
      "-name sandbox-sb1",
      "-machine pc,nvdimm=on",
      // TCG's translation cache is bounded (tcg_tb_size_mb): host memory every VM holds.
      "-accel tcg,tb-size=128",
      // "host" needs kvm.
      "-cpu max",
      "-smp 1",
      "-m 512M,slots=8,maxmem=24000M",
      // Shared: vhost-device-vsock maps guest memory.
      "-object memory-backend-memfd,id=mem,size=512M,share=on",
      "-numa node,memdev=mem",
      "-nodefaults",
      "-nographic",
      "-no-user-config",
      "-no-reboot",
      "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      `-qmp unix:${DIR}/qmp.sock,server=on,wait=off`,
      `-chardev socket,id=console0,path=${DIR}/console.sock,server=on,wait=off`,
      "-serial chardev:console0",
      "-device pci-bridge,bus=pci.0,id=pci-bridge-0,chassis_nr=1,shpc=off",
      "-object memory-backend-file,id=mem-rootfs,mem-path=/var/lib/kuasar/kuasar.img,size=157286400,readonly=on,share=off",
      "-device nvdimm,id=nv-rootfs,memdev=mem-rootfs,unarmed=on",
      "-kernel /var/lib/kuasar/vmlinux.bin",
      "-append console=ttyS0 lapic_timer_hz=1000000000 root=/dev/pmem0p1 rootflags=dax ro rootfstype=ext4 panic=1 no_timer_check task.sharefs_type=9p task.log_level=info task.hybrid_vsock",
      "-object rng-random,id=rng0,filename=/dev/urandom",
      "-device virtio-rng-pci,rng=rng0",
      `-fsdev local,id=fsdev-kuasar,path=${DIR}/shared,security_model=none`,
      "-device virtio-9p-pci,fsdev=fsdev-kuasar,mount_tag=kuasar",
      `-chardev socket,id=char-vsock,path=${DIR}/vhost-vsock.sock`,
      "-device vhost-user-vsock-pci,chardev=char-vsock",
    ]);
    // The helper works in vsock/ and names its sockets relative to it; QEMU and the daemon use root-owned links.
    assert.deepEqual(
      plan.helpers.map((h) => [h.name, h.path, h.args.join(" "), h.argv0, h.ownDir, h.readyPath, h.publish]),
      [
        [
          "vhost-device-vsock",
          "/usr/bin/vhost-device-vsock",
          "--guest-cid 3 --socket vhost-vsock.sock --uds-path task.vsock",
          // ps and the leftover sweep still find it by the sandbox directory.
          `${DIR}/vsock/vhost-device-vsock`,
          `${DIR}/vsock`,
          `${DIR}/vsock/vhost-vsock.sock`,
          [
            { from: `${DIR}/vsock/vhost-vsock.sock`, to: `${DIR}/vhost-vsock.sock` },
            { from: `${DIR}/vsock/task.vsock`, to: `${DIR}/task.vsock` },
          ],
        ],
      ],
    );
    assert.deepEqual(plan.agentAddress, { kind: "hvsock", udsPath: `${DIR}/task.vsock`, port: 1024 });
    assert.equal(plan.consoleLog, `${DIR}/console.log`);
    assert.equal(plan.vmm.logFile, `${DIR}/vmm.log`);
    assert.deepEqual(plan.vmm.fds, []);
    assert.equal(plan.vmm.netnsPath, undefined);
    assert.deepEqual(plan.files, [
      `${DIR}/qmp.sock`,
      `${DIR}/console.sock`,
      `${DIR}/vhost-vsock.sock`,
      `${DIR}/task.vsock`,
    ]);
  });

  test("initrd, virtio-fs (C virtiofsd), vhost-vsock, kvm with extra machine options, taps by fd and by name", () => {
    const config = qemu(
      'initrd_path = "/var/lib/kuasar/kuasar.initrd"\nshare_fs = "VirtioFS"\nmachine_accelerators = "auto,kernel_irqchip=on"\n' +
        'kernel_params = "quiet"\n[hypervisor.task]\ndebug = true\n',
    );
    config.sandbox.log_level = "debug";
    const plan = qemuPlan(
      config,
      {
        ...sandbox,
        vcpus: 2,
        memoryMiB: 1024,
        netnsPath: "/var/run/netns/cni-1",
        kernelParams: "task.log_level=trace",
        netDevices: [
          { tapName: "tap_kua_2", fds: [17, 18], mac: "02:42:ac:11:00:02", mtu: 1500 },
          { tapName: "tap_kua_3", mac: "02:42:ac:11:00:03", mtu: 1450 },
        ],
      },
      { accel: "kvm", vsock: "vhost", cid: 1234, vhostNet: true, hostMemMiB: 24000, virtiofsd: "c" },
    );
    assert.deepEqual(lines(plan.vmm.args), [
      "-name sandbox-sb1",
      "-machine pc,kernel_irqchip=on",
      "-accel kvm",
      "-cpu host",
      "-smp 2",
      "-m 1024M,slots=8,maxmem=24000M",
      "-object memory-backend-memfd,id=mem,size=1024M,share=on",
      "-numa node,memdev=mem",
      "-nodefaults",
      "-nographic",
      "-no-user-config",
      "-no-reboot",
      "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      `-qmp unix:${DIR}/qmp.sock,server=on,wait=off`,
      `-chardev socket,id=console0,path=${DIR}/console.sock,server=on,wait=off`,
      "-serial chardev:console0",
      "-device pci-bridge,bus=pci.0,id=pci-bridge-0,chassis_nr=1,shpc=off",
      "-kernel /var/lib/kuasar/vmlinux.bin",
      "-append console=ttyS0 rdinit=/sbin/init panic=1 no_timer_check task.sharefs_type=virtiofs task.log_level=debug task.debug quiet task.log_level=trace",
      "-initrd /var/lib/kuasar/kuasar.initrd",
      "-object rng-random,id=rng0,filename=/dev/urandom",
      "-device virtio-rng-pci,rng=rng0",
      `-chardev socket,id=char-virtiofs,path=${DIR}/virtiofs.sock`,
      "-device vhost-user-fs-pci,chardev=char-virtiofs,tag=kuasar,queue-size=1024",
      "-device vhost-vsock-pci,id=vsock0,guest-cid=1234",
      "-netdev tap,id=net0,fds=3:4,vhost=on",
      "-device virtio-net-pci,netdev=net0,mac=02:42:ac:11:00:02,id=nic0,mq=on,vectors=6",
      "-netdev tap,id=net1,ifname=tap_kua_3,script=no,downscript=no,vhost=on",
      "-device virtio-net-pci,netdev=net1,mac=02:42:ac:11:00:03,id=nic1",
    ]);
    // The tap fds become the child's 3 and 4; the tap opened by name needs the pod netns.
    assert.deepEqual(plan.vmm.fds, [17, 18]);
    assert.equal(plan.vmm.netnsPath, "/var/run/netns/cni-1");
    assert.deepEqual(plan.agentAddress, { kind: "vsock", cid: 1234, port: 1024 });
    assert.deepEqual(plan.helpers[0]?.args, [
      `--socket-path=${DIR}/virtiofs.sock`,
      ...["-o", `source=${DIR}/shared`, "-o", "cache=none", "-o", "log_level=info", "-o", "announce_submounts"],
      "--thread-pool-size=4",
    ]);
  });

  test("q35 with virtio-scsi, NVDIMM rootfs, hugepages, iothreads, maxcpus, 9p options, no RNG", () => {
    const plan = qemuPlan(
      qemu(
        'machine_type = "q35"\nblock_device_driver = "VirtioScsi"\ndisable_nvdimm = false\nhugepages = true\n' +
          "mem_prealloc = true\nenable_iothreads = true\ndefault_max_vcpus = 4\ndefault_bridges = 2\n" +
          'virtio_9p_multidevs = "remap"\nvirtio_9p_direct_io = true\nentropy_source = ""\ncpu_features = "pmu=off"\n' +
          'firmware_path = "/usr/share/qemu/bios-microvm.bin"\ndebug = true\n',
      ),
      sandbox,
      {
        accel: "tcg",
        vsock: "vhost",
        cid: 99,
        vhostNet: true,
        hostMemMiB: 512,
        imageBytes: 300 * 1048576 + 4096,
        imageLayout: KUASAR_IMAGE,
      },
    );
    assert.deepEqual(lines(plan.vmm.args), [
      "-name sandbox-sb1",
      "-machine q35,nvdimm=on",
      // It can hot-add vCPUs: single-threaded TCG.
      "-accel tcg,tb-size=128,thread=single",
      "-cpu max,pmu=off",
      "-smp 1,maxcpus=4",
      // maxmem covers guest memory plus the NVDIMM even on a small host.
      "-m 512M,slots=8,maxmem=813M",
      "-object memory-backend-file,id=mem,size=512M,mem-path=/dev/hugepages,share=off,prealloc=on",
      "-numa node,memdev=mem",
      "-bios /usr/share/qemu/bios-microvm.bin",
      "-nodefaults",
      "-nographic",
      "-no-user-config",
      "-no-reboot",
      "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      `-qmp unix:${DIR}/qmp.sock,server=on,wait=off`,
      `-chardev socket,id=console0,path=${DIR}/console.sock,server=on,wait=off`,
      "-serial chardev:console0",
      "-d guest_errors,unimp",
      "-device pcie-root-port,id=rp0,bus=pcie.0,chassis=1,port=1",
      "-device pcie-root-port,id=rp1,bus=pcie.0,chassis=2,port=2",
      "-object iothread,id=iothread0",
      "-device virtio-scsi-pci,id=scsi0,iothread=iothread0",
      "-object memory-backend-file,id=mem-rootfs,mem-path=/var/lib/kuasar/kuasar.img,size=314576896,readonly=on,share=off",
      "-device nvdimm,id=nv-rootfs,memdev=mem-rootfs,unarmed=on",
      "-kernel /var/lib/kuasar/vmlinux.bin",
      "-append console=ttyS0 lapic_timer_hz=1000000000 root=/dev/pmem0p1 rootflags=dax ro rootfstype=ext4 panic=1 no_timer_check task.sharefs_type=9p task.log_level=info",
      `-fsdev local,id=fsdev-kuasar,path=${DIR}/shared,security_model=none,multidevs=remap,writeout=immediate`,
      "-device virtio-9p-pci,fsdev=fsdev-kuasar,mount_tag=kuasar",
      "-device vhost-vsock-pci,id=vsock0,guest-cid=99",
    ]);
    assert.equal(plan.extra.hotplugBuses, "rp0,rp1");
    assert.deepEqual(plan.helpers, []);
  });

  test("microvm takes virtio-mmio devices and a machine memory backend instead of a NUMA node", () => {
    const plan = qemuPlan(
      qemu(
        'machine_type = "microvm"\nblock_device_driver = "VirtioMmio"\nmem_slots = 0\nmemory_path = "/dev/shm/vm"\n',
      ),
      sandbox,
      TCG_HYBRID,
    );
    const l = lines(plan.vmm.args);
    assert.ok(l.includes("-machine microvm,memory-backend=mem"), l.join("\n"));
    assert.ok(l.includes("-m 512M"));
    assert.ok(l.includes("-object memory-backend-file,id=mem,size=512M,mem-path=/dev/shm/vm,share=on"));
    assert.ok(!l.some((a) => a.startsWith("-numa") || a.includes("pci-bridge")));
    assert.deepEqual(
      l.filter((a) => a.startsWith("-device")),
      [
        "-device virtio-blk-device,drive=rootfs,id=rootfs-disk",
        "-device virtio-rng-device,rng=rng0",
        "-device virtio-9p-device,fsdev=fsdev-kuasar,mount_tag=kuasar",
        "-device vhost-user-vsock-device,chardev=char-vsock",
      ],
    );
  });

  test("the root device follows the image's layout: DAX only from an fsdax NVDIMM, partition 1 only if there is one", () => {
    const append = (toml: string, imageLayout: { partitioned: boolean; fsdax: boolean }) => {
      const args = qemuPlan(qemu(toml), sandbox, { ...TCG_HYBRID, imageBytes: 8192, imageLayout }).vmm.args;
      return args[args.indexOf("-append") + 1] ?? "";
    };
    const nvdimm = "";
    assert.match(append(nvdimm, KUASAR_IMAGE), / root=\/dev\/pmem0p1 rootflags=dax ro /);
    assert.match(append(nvdimm, { partitioned: true, fsdax: false }), / root=\/dev\/pmem0p1 ro /);
    assert.match(append(nvdimm, { partitioned: false, fsdax: false }), / root=\/dev\/pmem0 ro /);
    assert.match(append("disable_nvdimm = true\n", KUASAR_IMAGE), / root=\/dev\/vda1 ro /);
    assert.match(append("disable_nvdimm = true\n", { partitioned: false, fsdax: false }), / root=\/dev\/vda ro /);
  });

  test("the Rust virtiofsd gets its own flags; a tap without fds and without a netns is refused", () => {
    const plan = qemuPlan(
      qemu('share_fs = "VirtioFS"\n[hypervisor.virtiofsd]\nsyslog = true\ncache = "auto"\n'),
      sandbox,
      {
        ...TCG_HYBRID,
        virtiofsd: "rust",
      },
    );
    assert.deepEqual(plan.helpers.find((h) => h.name === "virtiofsd")?.args, [
      ...["--socket-path", `${DIR}/virtiofs.sock`, "--shared-dir", `${DIR}/shared`, "--cache", "auto"],
      ...["--log-level", "info", "--announce-submounts", "--thread-pool-size", "4", "--syslog"],
    ]);
    assert.throws(
      () =>
        qemuPlan(
          qemu(),
          { ...sandbox, netDevices: [{ tapName: "tap_kua_9", mac: "02:00:00:00:00:09", mtu: 1500 }] },
          TCG_HYBRID,
        ),
      /sandbox sb1: NIC tap_kua_9 has no tap fds and no netnsPath is given to open it in/,
    );
    assert.throws(
      () => qemuPlan(qemu("disable_nvdimm = false\n"), sandbox, { ...TCG_HYBRID, imageBytes: 1000 }),
      /kuasar\.img is 1000 bytes: an NVDIMM needs a size that is a multiple of 4096/,
    );
    assert.throws(
      () =>
        qemuPlan(qemu('share_fs = "VirtioFS"\n[hypervisor.virtiofsd]\ncache = "metadata"\n'), sandbox, {
          ...TCG_HYBRID,
          virtiofsd: "c",
        }),
      /hypervisor\.virtiofsd\.cache = "metadata" needs the Rust virtiofsd/,
    );
  });

  test("machine_accelerators: the accelerator word and Kuasar's extra machine options", () => {
    assert.deepEqual(parseAccelerators(""), { accel: "auto", machineOptions: [] });
    assert.deepEqual(parseAccelerators("tcg"), { accel: "tcg", machineOptions: [] });
    assert.deepEqual(parseAccelerators("kernel_irqchip=on, kvm"), {
      accel: "kvm",
      machineOptions: ["kernel_irqchip=on"],
    });
  });

  test("task.hybrid_vsock is on the kernel command line exactly when the agent is reached over hybrid vsock", () => {
    for (const vsock of ["hybrid", "vhost"] as const) {
      const plan = qemuPlan(qemu(), sandbox, { ...TCG_HYBRID, vsock });
      const words = plan.vmm.args[plan.vmm.args.indexOf("-append") + 1]!.split(" ");
      const flags = words.filter((w) => w.startsWith("task.hybrid_vsock"));
      assert.deepEqual(flags, vsock === "hybrid" ? ["task.hybrid_vsock"] : [], `vsock ${vsock}: ${words.join(" ")}`);
      assert.equal(plan.agentAddress.kind, vsock === "hybrid" ? "hvsock" : "vsock");
    }
  });

  test("every machine runs under QEMU's seccomp sandbox with its serial console on a socket the daemon reads", () => {
    for (const machine of ['"pc"', '"q35"', '"microvm"\nblock_device_driver = "VirtioMmio"']) {
      const plan = qemuPlan(qemu(`machine_type = ${machine}\nmem_slots = 0\n`), sandbox, TCG_HYBRID);
      const l = lines(plan.vmm.args);
      // No exec, no privilege change, no scheduler or affinity changes, no obsolete system calls.
      assert.ok(
        l.includes("-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"),
        machine,
      );
      // Listening without waiting: QEMU boots at once and the daemon connects after spawning it.
      assert.ok(l.includes(`-chardev socket,id=console0,path=${DIR}/console.sock,server=on,wait=off`), machine);
      assert.ok(l.includes("-serial chardev:console0"), machine);
      // Nothing of the guest's is written to a file by QEMU itself.
      assert.ok(!l.some((a) => /(^-chardev file|logfile=|console\.log)/.test(a)), l.join("\n"));
      assert.equal(plan.consoleSocket, `${DIR}/console.sock`);
      assert.equal(plan.consoleLog, `${DIR}/console.log`);
      assert.ok(plan.files.includes(`${DIR}/console.sock`));
    }
  });
});

/** Probes answering from a table, so each decision can be checked without the hardware. */
function probes(p: {
  kvm?: string | true;
  modules?: string[];
  vhostVsock?: boolean;
  helper?: boolean;
  help?: string;
}): HostProbes {
  return {
    openRw: async () =>
      p.kvm === true ? { ok: true } : { ok: false, error: p.kvm ?? "ENOENT: no such file or directory" },
    exists: async (path) => (path === "/dev/vhost-vsock" ? Boolean(p.vhostVsock) : false),
    modules: async () => new Set(p.modules ?? []),
    hostMemMiB: () => 1024,
    helpText: async () => p.help ?? "",
    fileSize: async () => 0,
    readHead: async () => Buffer.alloc(0),
    isBlockDevice: async () => false,
    executable: async () => Boolean(p.helper),
  };
}

describe("host decisions", () => {
  test("auto picks kvm only with an openable /dev/kvm and kvm_intel or kvm_amd loaded", async () => {
    assert.deepEqual(await chooseAccelerator("auto", probes({ kvm: true, modules: ["kvm", "kvm_intel"] })), {
      value: "kvm",
      reason: "/dev/kvm opens and kvm_intel is loaded",
    });
    // This project's machines: a nested PVM /dev/kvm where ordinary guests hang.
    const pvm = await chooseAccelerator("auto", probes({ kvm: true, modules: ["kvm", "kvm_pvm"] }));
    assert.equal(pvm.value, "tcg");
    assert.match(pvm.reason, /neither kvm_intel nor kvm_amd is loaded \(kvm modules: kvm, kvm_pvm\)/);
    const none = await chooseAccelerator("auto", probes({ kvm: "ENOENT: no such file or directory, open '/dev/kvm'" }));
    assert.deepEqual(
      [none.value, none.reason],
      ["tcg", "/dev/kvm cannot be opened (ENOENT: no such file or directory, open '/dev/kvm')"],
    );
  });

  test("a forced accelerator is used as asked, and kvm without /dev/kvm is an error naming the key", async () => {
    assert.equal((await chooseAccelerator("tcg", probes({ kvm: true, modules: ["kvm_amd"] }))).value, "tcg");
    assert.equal((await chooseAccelerator("kvm", probes({ kvm: true, modules: ["kvm_pvm"] }))).value, "kvm");
    await assert.rejects(
      chooseAccelerator("kvm", probes({})),
      /machine_accelerators = "kvm" but \/dev\/kvm cannot be opened/,
    );
  });

  test("vsock: vhost where /dev/vhost-vsock exists, else hybrid; missing pieces are named", async () => {
    const helper = "/usr/bin/vhost-device-vsock";
    assert.equal((await chooseVsock("auto", helper, probes({ vhostVsock: true }))).value, "vhost");
    assert.deepEqual(await chooseVsock("auto", helper, probes({ helper: true })), {
      value: "hybrid",
      reason: "/dev/vhost-vsock does not exist; using /usr/bin/vhost-device-vsock",
    });
    assert.equal((await chooseVsock("hybrid", helper, probes({ vhostVsock: true, helper: true }))).value, "hybrid");
    await assert.rejects(
      chooseVsock("auto", helper, probes({})),
      /no vsock transport: .*modprobe vhost_vsock.*apt-get install vhost-device-vsock/,
    );
    await assert.rejects(
      chooseVsock("vhost", helper, probes({ helper: true })),
      /vsock_mode = "vhost" but \/dev\/vhost-vsock does not exist/,
    );
  });

  test("virtiofsd flavour from its --help", async () => {
    assert.equal(await virtiofsdDialect("/v", probes({ help: "    -o source=PATH   shared directory tree" })), "c");
    assert.equal(await virtiofsdDialect("/v", probes({ help: "      --shared-dir <SHARED_DIR>" })), "rust");
    await assert.rejects(
      virtiofsdDialect("/bin/true", probes({ help: "" })),
      /\/bin\/true does not look like virtiofsd/,
    );
  });
});

describe("room to grow on Update", () => {
  const smp = (args: string[]) => lines(args).find((l) => l.startsWith("-smp "));
  test("default_max_vcpus = 0 lets a VM grow to the host's CPUs; a set value wins; microvm cannot add vCPUs", () => {
    const facts = { ...TCG_HYBRID, hostCpus: 4 };
    assert.equal(smp(qemuPlan(qemu(), sandbox, facts).vmm.args), "-smp 1,maxcpus=4");
    assert.equal(smp(qemuPlan(qemu("default_max_vcpus = 3\n"), sandbox, facts).vmm.args), "-smp 1,maxcpus=3");
    const micro = qemu('machine_type = "microvm"\nblock_device_driver = "VirtioMmio"\nmem_slots = 0\n');
    assert.equal(smp(qemuPlan(micro, sandbox, facts).vmm.args), "-smp 1");
  });

  test("the plan records the ceilings (the NVDIMM takes a slot and its size) and the backend hot-plugged DIMMs copy", () => {
    const plan = qemuPlan(qemu(), sandbox, { ...TCG_HYBRID, hostCpus: 4 });
    assert.deepEqual(
      {
        vcpus: plan.extra.vcpus,
        maxVcpus: plan.extra.maxVcpus,
        memoryMiB: plan.extra.memoryMiB,
        maxMemMiB: plan.extra.maxMemMiB,
        memSlots: plan.extra.memSlots,
        memBackend: plan.extra.memBackend,
        memShared: plan.extra.memShared,
      },
      {
        vcpus: 1,
        maxVcpus: 4,
        memoryMiB: 512,
        maxMemMiB: 24000 - 150,
        memSlots: 7,
        memBackend: "memory-backend-memfd",
        memShared: true,
      },
    );
  });
});

test("tcg_tb_size_mb = 0 leaves TCG's translation cache at QEMU's default", () => {
  const args = lines(qemuPlan(qemu("tcg_tb_size_mb = 0\n"), sandbox, TCG_HYBRID).vmm.args);
  assert.ok(args.includes("-accel tcg"), args.join("\n"));
});

test("TCG is single-threaded exactly when the VM can hot-add vCPUs (multi-threaded TCG aborts on a hot-add); kvm never", () => {
  const accel = (toml: string, facts: QemuFacts) =>
    lines(qemuPlan(qemu(toml), sandbox, facts).vmm.args).find((l) => l.startsWith("-accel "));
  const host4 = { ...TCG_HYBRID, hostCpus: 4 };
  assert.equal(accel("", host4), "-accel tcg,tb-size=128,thread=single");
  assert.equal(accel("tcg_tb_size_mb = 0\n", host4), "-accel tcg,thread=single");
  assert.equal(accel("vcpus = 2\ndefault_max_vcpus = 2\n", host4), "-accel tcg,tb-size=128", "no room to grow");
  assert.equal(accel("vcpus = 4\n", host4), "-accel tcg,tb-size=128", "already at the host's CPUs");
  assert.equal(accel("", { ...host4, accel: "kvm" }), "-accel kvm");
});

test("a start is retried for a CID another VM holds (vhost) or a vhost-device-vsock socket that refused QEMU (hybrid)", () => {
  const refused =
    "qemu-system-x86_64: -chardev socket,id=char-vsock,path=/s/cycle-21/vhost-vsock.sock: Failed to connect to " +
    "'/s/cycle-21/vhost-vsock.sock': Connection refused";
  assert.equal(qemuStartRetryable("hybrid", refused), true);
  assert.equal(qemuStartRetryable("vhost", refused), false);
  assert.equal(qemuStartRetryable("vhost", "vhost-vsock: unable to set guest cid: Address already in use"), true);
  assert.equal(qemuStartRetryable("hybrid", "vhost-vsock: unable to set guest cid: Address already in use"), false);
  // Anything else is reported, not retried: a missing socket (the helper never came up) included.
  assert.equal(qemuStartRetryable("hybrid", refused.replace("Connection refused", "No such file or directory")), false);
  assert.equal(qemuStartRetryable("hybrid", "qemu-system-x86_64: -kernel /x: No such file"), false);
});
