import path from "node:path";
import { BARE_IMAGE, type ImageLayout, rootPartition } from "../../../contract/image-layout.ts";
import { AGENT_PORT } from "../../../contract/ports.ts";
import { SHARE_TAG } from "../../../contract/share.ts";
import type { VirtiofsdDialect } from "../host.ts";
import { kernelCmdline } from "../kernel-cmdline.ts";
import { layoutNics } from "../net.ts";
import { virtiofsd } from "../virtiofsd.ts";
import type { Plan } from "../vm.ts";
import type { SandboxSpec } from "../vm-api.ts";
import type { ClhConfig } from "./config.ts";

/** cloud-hypervisor's hybrid vsock CID: each VM has its own UDS, so every guest can be 3. */
const GUEST_CID = 3;

/**
 * The cloud-hypervisor command line: the VM boots straight from the flags; the API socket is for control. Guest
 * memory is shared because virtio-fs (the only share cloud-hypervisor has) maps it from virtiofsd.
 */
export function clhPlan(
  config: ClhConfig,
  sandbox: SandboxSpec,
  dialect: VirtiofsdDialect,
  host?: { cpus: number; memMiB: number },
  layout: ImageLayout = BARE_IMAGE,
): Plan {
  const h = config.hypervisor;
  const dir = sandbox.dir;
  const api = path.join(dir, "api.sock");
  const vsock = path.join(dir, "task.vsock");
  const consoleLog = path.join(dir, "console.log");
  const consoleSocket = path.join(dir, "console.sock");
  const vcpus = sandbox.vcpus ?? h.vcpus;
  const mem = sandbox.memoryMiB ?? h.memory_in_mb;
  const fs = virtiofsd(config, sandbox, dialect, []);

  // Room to grow on Update, up to the host's CPUs and memory (ACPI hotplug takes 128 MiB steps).
  const maxVcpus = Math.max(host?.cpus ?? 0, vcpus);
  const hotplugMiB = Math.max(Math.floor(((host?.memMiB ?? 0) - mem) / 128) * 128, 0);
  const memory = [`size=${mem}M`, "shared=on"];
  if (hotplugMiB > 0) memory.push(`hotplug_size=${hotplugMiB}M`);
  if (h.hugepages) memory.push("hugepages=on");
  if (h.enable_mem_prealloc) memory.push("prefault=on");
  const image = h.image_path;
  const args = [
    ...["--api-socket", api],
    ...["--cpus", maxVcpus > vcpus ? `boot=${vcpus},max=${maxVcpus}` : `boot=${vcpus}`],
    ...["--memory", memory.join(",")],
    ...["--kernel", h.kernel_path],
    ...[
      "--cmdline",
      kernelCmdline(config, sandbox, {
        console: "console=ttyS0",
        // virtio-pmem maps the image with struct pages, so it is DAX-capable with or without a PFN info block.
        rootDevice: image ? rootPartition("/dev/pmem0", layout) : undefined,
        rootDax: image !== "",
        sharefs: "virtiofs",
        hybridVsock: true,
      }),
    ],
  ];
  // discard_writes: the guest may write to its copy of the page cache, never to the shared image file.
  if (image) args.push("--pmem", `file=${image},discard_writes=on`);
  else args.push("--initramfs", h.initrd_path);
  if (h.entropy_source) args.push("--rng", `src=${h.entropy_source}`);
  args.push(
    ...["--vsock", `cid=${GUEST_CID},socket=${vsock}`],
    ...["--fs", `tag=${SHARE_TAG},socket=${fs.readyPath}`],
    // The daemon reads the serial console from this socket into console.log, capped (hypervisor/console.ts).
    ...["--serial", `socket=${consoleSocket}`, "--console", "off"],
  );
  const net = layoutNics(sandbox);
  for (const n of net.nics) {
    // num_queues counts rx and tx separately: two per tap queue. A tap opened by name gets the NIC's queue count.
    const q = n.childFds.length || (sandbox.netDevices[n.index]?.queues ?? 1);
    const mq = q > 1 ? `,num_queues=${2 * q}` : "";
    args.push(
      "--net",
      n.childFds.length === 0
        ? `tap=${n.tapName},mac=${n.mac}${mq}`
        : `fd=[${n.childFds.join(",")}],mac=${n.mac},num_queues=${2 * q}`,
    );
  }
  if (h.debug) args.push("-vv");

  return {
    helpers: [fs],
    vmm: {
      name: "cloud-hypervisor",
      path: h.path,
      args,
      logFile: path.join(dir, "vmm.log"),
      fds: net.hostFds,
      ...(net.netnsPath ? { netnsPath: net.netnsPath } : {}),
    },
    agentAddress: { kind: "hvsock", udsPath: vsock, port: AGENT_PORT },
    consoleLog,
    consoleSocket,
    controlSocket: api,
    files: [api, vsock, fs.readyPath, consoleSocket],
    extra: { vcpus, maxVcpus, memoryMiB: mem, maxMemMiB: mem + hotplugMiB },
  };
}
