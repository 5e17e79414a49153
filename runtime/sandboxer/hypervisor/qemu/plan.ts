import path from "node:path";
import { BARE_IMAGE, type ImageLayout, rootPartition } from "../../../contract/image-layout.ts";
import { AGENT_PORT } from "../../../contract/ports.ts";
import { SHARE_TAG } from "../../../contract/share.ts";
import type { Accel, VirtiofsdDialect } from "../host.ts";
import { kernelCmdline } from "../kernel-cmdline.ts";
import { layoutNics } from "../net.ts";
import { virtiofsd } from "../virtiofsd.ts";
import type { HelperSpec, Plan } from "../vm.ts";
import type { AgentAddress, SandboxSpec } from "../vm-api.ts";
import { parseAccelerators } from "./accelerator.ts";
import type { QemuConfig } from "./config.ts";
import { type VsockMode, vhostDeviceVsock } from "./vsock.ts";

/** Host facts a QEMU command line depends on, probed by the driver (or given by a test). */
export interface QemuFacts {
  accel: Accel;
  vsock: VsockMode;
  /** Guest CID for vhost-vsock. */
  cid: number;
  /** /dev/vhost-net exists: tap NICs get vhost=on under kvm. */
  vhostNet: boolean;
  hostMemMiB: number;
  /** Which virtiofsd flags to use (share_fs = VirtioFS). */
  virtiofsd?: VirtiofsdDialect;
  /** Size of image_path, for the NVDIMM (disable_nvdimm = false). */
  imageBytes?: number;
  /** image_path's layout: the root is its partition 1 when it has one, mounted with DAX from an fsdax NVDIMM. */
  imageLayout?: ImageLayout;
  /** The host's CPUs: default_max_vcpus = 0 lets a VM grow to them (Update hot-plugs vCPUs). */
  hostCpus?: number;
}

const on = (b: boolean) => (b ? "on" : "off");

/** QEMU's name for a device: virtio-mmio on microvm, PCI on the other machines. */
export const qemuDevice = (machineType: string, name: string) =>
  machineType === "microvm" ? `${name}-device` : `${name}-pci`;

/** The device the share reaches the guest through: QEMU's own 9p server, or virtio-fs from virtiofsd. */
export const shareDevice = (h: QemuConfig["hypervisor"]) =>
  qemuDevice(h.machine_type, h.share_fs === "VirtioFS" ? "vhost-user-fs" : "virtio-9p");

/** The device the agent is reached through: vhost-vsock, or vhost-device-vsock's vhost-user one (hybrid). */
export const vsockDevice = (h: QemuConfig["hypervisor"], mode: VsockMode) =>
  qemuDevice(h.machine_type, mode === "hybrid" ? "vhost-user-vsock" : "vhost-vsock");

/**
 * -accel for TCG (-accel, not -machine accel=, takes its options). tb-size bounds the translation cache, host memory
 * each VM holds. A VM that can hot-add vCPUs runs single-threaded TCG: multi-threaded TCG gives each vCPU thread a
 * region of that cache, and QEMU (7.2 at least) aborts in tcg_region_initial_alloc when a vCPU is added while every
 * region is taken, which a bounded cache reaches within seconds of a container starting.
 */
export function tcgAccel(tbSizeMiB: number, canAddVcpus: boolean): string {
  return ["tcg", ...(tbSizeMiB > 0 ? [`tb-size=${tbSizeMiB}`] : []), ...(canAddVcpus ? ["thread=single"] : [])].join(
    ",",
  );
}

/** The QEMU command line and helpers for one sandbox VM. */
export function qemuPlan(config: QemuConfig, sandbox: SandboxSpec, facts: QemuFacts): Plan {
  const h = config.hypervisor;
  const dir = sandbox.dir;
  const micro = h.machine_type === "microvm";
  const q35 = /^(q35|pc-q35-)/.test(h.machine_type);
  // microvm has only virtio-mmio; the other machines take PCI devices.
  const dev = (name: string) => qemuDevice(h.machine_type, name);
  const vcpus = sandbox.vcpus ?? h.vcpus;
  const mem = sandbox.memoryMiB ?? h.memory_in_mb;
  const image = h.image_path;
  const nvdimm = image !== "" && !h.disable_nvdimm;
  const virtiofs = h.share_fs === "VirtioFS";
  const hybrid = facts.vsock === "hybrid";
  const helpers: HelperSpec[] = [];
  const consoleSocket = path.join(dir, "console.sock");
  const files = [path.join(dir, "qmp.sock"), consoleSocket];
  const consoleLog = path.join(dir, "console.log");

  const machine = [h.machine_type, ...parseAccelerators(h.machine_accelerators).machineOptions];
  if (nvdimm) machine.push("nvdimm=on");
  if (micro) machine.push("memory-backend=mem");
  const cpuModel = h.cpu_model === "host" && facts.accel === "tcg" ? "max" : h.cpu_model;
  // microvm has no ACPI CPU hotplug, so its vCPUs are fixed at boot.
  const maxVcpus = micro ? vcpus : Math.max(h.default_max_vcpus || (facts.hostCpus ?? 0), vcpus);
  const accel = facts.accel === "tcg" ? tcgAccel(h.tcg_tb_size_mb, maxVcpus > vcpus) : facts.accel;

  const args = [
    ...["-name", `sandbox-${sandbox.id}`],
    ...["-machine", machine.join(",")],
    ...["-accel", accel],
    ...["-cpu", [cpuModel, h.cpu_features].filter(Boolean).join(",")],
    ...["-smp", maxVcpus > vcpus ? `${vcpus},maxcpus=${maxVcpus}` : String(vcpus)],
  ];

  // Memory: vhost-user devices (hybrid vsock, virtio-fs, vhost-user storage) map guest RAM, so it must be shared.
  const nvdimmMiB = nvdimm ? Math.ceil((facts.imageBytes ?? 0) / 1048576) : 0;
  const slots = h.mem_slots > 0 && !micro ? h.mem_slots : 0;
  // maxmem (host memory, as Kuasar sets it) must exceed the boot memory and leave room for the NVDIMM.
  const maxMem = Math.max(facts.hostMemMiB, mem + Math.max(nvdimmMiB, 1));
  args.push("-m", slots > 0 ? `${mem}M,slots=${slots},maxmem=${maxMem}M` : `${mem}M`);
  const shared = hybrid || virtiofs || h.enable_vhost_user_store;
  const memPath = h.memory_path || (h.hugepages ? "/dev/hugepages" : "");
  const backend = memPath
    ? [`memory-backend-file`, "id=mem", `size=${mem}M`, `mem-path=${memPath}`, `share=${on(shared)}`]
    : shared
      ? ["memory-backend-memfd", "id=mem", `size=${mem}M`, "share=on"]
      : ["memory-backend-ram", "id=mem", `size=${mem}M`];
  if (h.mem_prealloc || h.enable_mem_prealloc) backend.push("prealloc=on");
  args.push("-object", backend.join(","));
  // Memory hot-plugged on Update gets a backend like the boot memory's, so vhost-user helpers can map it too.
  const hotplug = {
    vcpus,
    maxVcpus,
    memoryMiB: mem,
    maxMemMiB: slots > 0 ? maxMem - nvdimmMiB : mem,
    memSlots: Math.max(slots - (nvdimm ? 1 : 0), 0),
    memBackend: backend[0] as string,
    memPath,
    memShared: shared,
    memPrealloc: h.mem_prealloc || h.enable_mem_prealloc,
  };
  if (!micro) args.push("-numa", "node,memdev=mem");

  const firmware = h.firmware_path || h.firmware;
  if (firmware) args.push("-bios", firmware);
  args.push(
    ...["-nodefaults", "-nographic", "-no-user-config"],
    // Guest reboots (panic=1) end the VM instead of looping.
    "-no-reboot",
    // seccomp: the process that emulates the guest's devices may not exec, gain privileges, change its scheduling
    // or use obsolete system calls.
    ...["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"],
    ...["-qmp", `unix:${path.join(dir, "qmp.sock")},server=on,wait=off`],
    // The daemon reads the console from this socket into console.log, capped (hypervisor/console.ts).
    ...["-chardev", `socket,id=console0,path=${consoleSocket},server=on,wait=off`, "-serial", "chardev:console0"],
  );
  if (h.debug) args.push("-d", "guest_errors,unimp");

  // Buses for hot-plugged disks, first so the explicit ones keep their places.
  const hotplugBuses: string[] = [];
  if (!micro) {
    for (let i = 0; i < h.default_bridges; i++) {
      const id = q35 ? `rp${i}` : `pci-bridge-${i}`;
      hotplugBuses.push(id);
      args.push(
        "-device",
        q35
          ? `pcie-root-port,id=${id},bus=pcie.0,chassis=${i + 1},port=${i + 1}`
          : `pci-bridge,bus=pci.0,id=${id},chassis_nr=${i + 1},shpc=off`,
      );
    }
  }
  const iothread = h.enable_iothreads ? ",iothread=iothread0" : "";
  if (h.enable_iothreads) args.push("-object", "iothread,id=iothread0");
  if (h.block_device_driver === "VirtioScsi") args.push("-device", `virtio-scsi-pci,id=scsi0${iothread}`);

  let rootDevice: string | undefined;
  const layout = facts.imageLayout ?? BARE_IMAGE;
  if (image && nvdimm) {
    const bytes = facts.imageBytes ?? 0;
    if (bytes === 0 || bytes % 4096 !== 0) {
      throw new Error(
        `hypervisor.image_path ${image} is ${bytes} bytes: an NVDIMM needs a size that is a multiple of 4096 ` +
          "(pad the image, or set disable_nvdimm = true)",
      );
    }
    // Read-only and unarmed: one image file backs every sandbox's root filesystem.
    args.push(
      ...[
        "-object",
        `memory-backend-file,id=mem-rootfs,mem-path=${image},size=${facts.imageBytes},readonly=on,share=off`,
      ],
      ...["-device", "nvdimm,id=nv-rootfs,memdev=mem-rootfs,unarmed=on"],
    );
    rootDevice = rootPartition("/dev/pmem0", layout);
  } else if (image) {
    // Read-only: every sandbox boots the same image, and QEMU would refuse a second writer anyway.
    args.push("-drive", `id=rootfs,file=${image},if=none,format=raw,readonly=on,aio=threads`);
    if (h.block_device_driver === "VirtioScsi") {
      args.push("-device", "scsi-hd,bus=scsi0.0,drive=rootfs,id=rootfs-disk");
      rootDevice = rootPartition("/dev/sda", layout);
    } else {
      args.push("-device", `${dev("virtio-blk")},drive=rootfs,id=rootfs-disk${micro ? "" : iothread}`);
      rootDevice = rootPartition("/dev/vda", layout);
    }
  }
  const cmdline = kernelCmdline(config, sandbox, {
    console: "console=ttyS0",
    // TCG has no TSC deadline timer, so Linux would spend 100 ms of every boot calibrating the APIC timer, which QEMU
    // clocks at 1 GHz (kernel-configs/patches/0002; a kernel without the patch passes it on to init, unused).
    platform: facts.accel === "tcg" ? ["lapic_timer_hz=1000000000"] : [],
    rootDevice,
    // An fsdax NVDIMM (the image's PFN info block): the guest maps files straight from the host's page cache.
    rootDax: nvdimm && layout.fsdax,
    sharefs: virtiofs ? "virtiofs" : "9p",
    hybridVsock: hybrid,
  });
  args.push("-kernel", h.kernel_path, "-append", cmdline);
  if (!image) args.push("-initrd", h.initrd_path);

  if (h.entropy_source) {
    args.push("-object", `rng-random,id=rng0,filename=${h.entropy_source}`, "-device", `${dev("virtio-rng")},rng=rng0`);
  }

  if (virtiofs) {
    const v = virtiofsd(config, sandbox, facts.virtiofsd ?? "c", h.virtiofs_extra_args);
    helpers.push(v);
    files.push(v.readyPath);
    args.push(
      ...["-chardev", `socket,id=char-virtiofs,path=${v.readyPath}`],
      ...["-device", `${shareDevice(h)},chardev=char-virtiofs,tag=${SHARE_TAG},queue-size=1024`],
    );
  } else {
    const fsdev = [`local,id=fsdev-${SHARE_TAG},path=${sandbox.shareDir},security_model=none`];
    if (h.virtio_9p_multidevs) fsdev.push(`multidevs=${h.virtio_9p_multidevs}`);
    if (h.virtio_9p_direct_io) fsdev.push("writeout=immediate");
    args.push(
      "-fsdev",
      fsdev.join(","),
      "-device",
      `${shareDevice(h)},fsdev=fsdev-${SHARE_TAG},mount_tag=${SHARE_TAG}`,
    );
  }

  let agentAddress: AgentAddress;
  if (hybrid) {
    const v = vhostDeviceVsock(config, sandbox);
    helpers.push(v);
    files.push(v.socket, v.uds);
    args.push(
      "-chardev",
      `socket,id=char-vsock,path=${v.socket}`,
      "-device",
      `${vsockDevice(h, facts.vsock)},chardev=char-vsock`,
    );
    agentAddress = { kind: "hvsock", udsPath: v.uds, port: AGENT_PORT };
  } else {
    args.push("-device", `${vsockDevice(h, facts.vsock)},id=vsock0,guest-cid=${facts.cid}`);
    agentAddress = { kind: "vsock", cid: facts.cid, port: AGENT_PORT };
  }

  const net = layoutNics(sandbox);
  const vhostNet = facts.accel === "kvm" && facts.vhostNet ? ",vhost=on" : "";
  for (const n of net.nics) {
    // A tap opened by name gets the NIC's queue count (QEMU opens it that many times); given fds, one queue each.
    const byName = n.childFds.length === 0;
    const queues = byName ? (sandbox.netDevices[n.index]?.queues ?? 1) : n.childFds.length;
    const backend = byName
      ? `ifname=${n.tapName},script=no,downscript=no${queues > 1 ? `,queues=${queues}` : ""}`
      : queues === 1
        ? `fd=${n.childFds[0]}`
        : `fds=${n.childFds.join(":")}`;
    // PCI: one MSI-X vector per rx and tx queue, plus config and control (virtio-mmio has no vectors).
    const mq = queues > 1 ? `,mq=on${micro ? "" : `,vectors=${2 * queues + 2}`}` : "";
    args.push(
      ...["-netdev", `tap,id=net${n.index},${backend}${vhostNet}`],
      ...["-device", `${dev("virtio-net")},netdev=net${n.index},mac=${n.mac},id=nic${n.index}${mq}`],
    );
  }

  return {
    helpers,
    vmm: {
      name: "qemu",
      path: h.qemu_path,
      args,
      logFile: path.join(dir, "vmm.log"),
      fds: net.hostFds,
      ...(net.netnsPath ? { netnsPath: net.netnsPath } : {}),
    },
    agentAddress,
    consoleLog,
    consoleSocket,
    controlSocket: path.join(dir, "qmp.sock"),
    files,
    extra: {
      accel: facts.accel,
      blockDriver: h.block_device_driver,
      hotplugBuses: hotplugBuses.join(","),
      machine: h.machine_type,
      ...hotplug,
    },
  };
}
