import path from "node:path";
import { BARE_IMAGE, type ImageLayout, rootPartition } from "../../../contract/image-layout.ts";
import { AGENT_PORT } from "../../../contract/ports.ts";
import { SHARE_TAG } from "../../../contract/share.ts";
import { kernelCmdline } from "../kernel-cmdline.ts";
import { layoutNics } from "../net.ts";
import type { HelperSpec, Plan } from "../vm.ts";
import type { SandboxSpec } from "../vm-api.ts";
import type { StratoVirtConfig } from "./config.ts";

/** PCIe root ports left free for hot-plugged disks (Kuasar's capacity). */
export const ROOT_PORTS = 10;

/**
 * StratoVirt's machine option with shared memory turned on: vhost_user_fs maps guest RAM, and virtio-fs is the only
 * share StratoVirt offers.
 */
export function stratovirtMachine(machineType: string): string {
  return /(^|,)mem-share=on(,|$)/.test(machineType) ? machineType : `${machineType},mem-share=on`;
}

/** The StratoVirt command line, with its vhost_user_fs daemon serving the share. */
export function stratovirtPlan(
  config: StratoVirtConfig,
  sandbox: SandboxSpec,
  cid: number,
  layout: ImageLayout = BARE_IMAGE,
): Plan {
  const h = config.hypervisor;
  const dir = sandbox.dir;
  const machine = stratovirtMachine(h.machine_type);
  const micro = machine.split(",")[0]!.replace(/^type=/, "") === "microvm";
  const qmp = path.join(dir, "qmp.sock");
  const fsSock = path.join(dir, "virtiofs.sock");
  const consoleLog = path.join(dir, "console.log");
  const consoleSocket = path.join(dir, "console.sock");
  const image = h.image_path;

  // Standard machines put every device on pcie.0 at an explicit slot (StratoVirt assigns none itself).
  let slot = 0;
  const place = (driver: string) => (micro ? `${driver}-device` : `${driver}-pci`);
  const at = () => (micro ? "" : `,bus=pcie.0,addr=0x${(++slot).toString(16)}`);

  const args = [
    ...["-name", `sandbox-${sandbox.id}`],
    ...["-machine", machine],
    ...["-smp", String(sandbox.vcpus ?? h.vcpus)],
    ...["-m", `${sandbox.memoryMiB ?? h.memory_in_mb}M`],
  ];
  if (h.hugepages) args.push("-mem-path", "/dev/hugepages");
  if (h.enable_mem_prealloc) args.push("-mem-prealloc");
  if (h.firmware) args.push("-drive", `file=${h.firmware},if=pflash,unit=0,readonly=true`);
  const cmdline = kernelCmdline(config, sandbox, {
    console: "console=ttyS0",
    // Hot-plug on StratoVirt's root ports is native PCIe, not ACPI.
    platform: micro ? [] : ["pcie_ports=native"],
    rootDevice: image ? rootPartition("/dev/vda", layout) : undefined,
    sharefs: "virtiofs",
    hybridVsock: false,
  });
  args.push("-kernel", h.kernel_path, "-append", cmdline);
  if (!image) args.push("-initrd", h.initrd_path);
  args.push(
    ...["-qmp", `unix:${qmp},server,nowait`],
    // The daemon reads the console from this socket into console.log, capped (hypervisor/console.ts).
    ...["-chardev", `socket,id=console0,path=${consoleSocket},server,nowait`, "-serial", "chardev:console0"],
    // As Kuasar runs it: its seccomp filter does not cover what the vhost backends need.
    "-disable-seccomp",
  );
  if (!micro) args.push("-global", "pcie-root-port.fast-unplug=1");

  if (h.entropy_source) {
    args.push("-object", `rng-random,id=rng0,filename=${h.entropy_source}`);
    args.push("-device", `${place("virtio-rng")},rng=rng0,id=virtio-rng0${at()}`);
  }
  if (image) {
    args.push("-drive", `id=rootfs,file=${image},readonly=on,direct=off`);
    args.push("-device", `${place("virtio-blk")},drive=rootfs,id=blk-0${at()}`);
  }
  args.push("-device", `${place("vhost-vsock")},id=vsock-${cid},guest-cid=${cid}${at()}`);
  // vhost_user_fs listens; StratoVirt connects as a client.
  args.push("-chardev", `socket,id=virtio-fs0,path=${fsSock}`);
  args.push("-device", `${place("vhost-user-fs")},id=vhost-user-fs0,chardev=virtio-fs0,tag=${SHARE_TAG}${at()}`);

  const net = layoutNics(sandbox);
  for (const n of net.nics) {
    // A tap opened by name gets the NIC's queue count; given fds, one queue each.
    const byName = n.childFds.length === 0;
    const q = byName ? (sandbox.netDevices[n.index]?.queues ?? 1) : n.childFds.length;
    if (micro && q > 1) {
      throw new Error(
        `sandbox ${sandbox.id}: NIC ${n.tapName} has ${q} queues; StratoVirt's virtio-mmio NIC takes one`,
      );
    }
    const backend = byName ? `ifname=${n.tapName}` : q === 1 ? `fd=${n.childFds[0]}` : `fds=${n.childFds.join(":")}`;
    args.push("-netdev", `tap,id=net${n.index},${backend}${q > 1 ? `,queues=${q}` : ""}`);
    args.push(
      "-device",
      `${place("virtio-net")},netdev=net${n.index},id=nic${n.index},mac=${n.mac}${q > 1 ? ",mq=on" : ""}${at()}`,
    );
  }

  const rootPorts: string[] = [];
  if (!micro) {
    for (let i = 1; i <= ROOT_PORTS; i++) {
      const addr = `0x${(++slot).toString(16)}`;
      rootPorts.push(`pcie.${i}`);
      args.push("-device", `pcie-root-port,port=${addr},addr=${addr},bus=pcie.0,id=pcie.${i}`);
    }
  }

  const fs: HelperSpec = {
    name: "vhost_user_fs",
    path: h.virtiofsd_conf.path,
    args: ["-source", sandbox.shareDir, "-socket-path", fsSock, "-D", path.join(dir, "virtiofs.log")],
    logFile: path.join(dir, "vhost_user_fs.log"),
    readyPath: fsSock,
  };
  return {
    helpers: [fs],
    vmm: {
      name: "stratovirt",
      path: h.path,
      args,
      logFile: path.join(dir, "vmm.log"),
      fds: net.hostFds,
      ...(net.netnsPath ? { netnsPath: net.netnsPath } : {}),
      ...(h.debug ? { env: { STRATOVIRT_LOG_LEVEL: "debug" } } : {}),
    },
    agentAddress: { kind: "vsock", cid, port: AGENT_PORT },
    consoleLog,
    consoleSocket,
    controlSocket: qmp,
    files: [qmp, fsSock, consoleSocket],
    extra: {
      micro,
      rootPorts: rootPorts.join(","),
      vcpus: sandbox.vcpus ?? h.vcpus,
      memoryMiB: sandbox.memoryMiB ?? h.memory_in_mb,
    },
  };
}
