import path from "node:path";
import { taskParams } from "../../contract/kernel-params.ts";
import type { Config } from "../config/schema.ts";
import type { VirtiofsdDialect } from "./host.ts";
import type { SandboxSpec } from "./index.ts";
import type { HelperSpec } from "./vm.ts";

export interface CmdlineParts {
  /** console=... for where the kernel's messages go. */
  console: string;
  /** Parameters the machine needs (e.g. pcie_ports=native). */
  platform?: string[];
  /** The block device holding image_path (root=<dev> ro), or undefined when booting initrd_path. */
  rootDevice: string | undefined;
  sharefs: "9p" | "virtiofs";
  /**
   * The host reaches the agent through hybrid vsock (a unix socket), where the VMM picks the guest-visible source
   * port: task.hybrid_vsock tells the guest not to demand a privileged one (which vhost-vsock peers must have).
   */
  hybridVsock: boolean;
}

/**
 * The guest kernel command line: console, root filesystem, the task.* parameters vmm-task reads, then the
 * configured kernel_params and the sandbox's own, last so they win (the guest takes the last value of a key).
 */
export function kernelCmdline(config: Config, sandbox: SandboxSpec, p: CmdlineParts): string {
  const h = config.hypervisor;
  const root = p.rootDevice ? [`root=${p.rootDevice}`, "ro", "rootfstype=ext4"] : ["rdinit=/sbin/init"];
  return [
    p.console,
    ...(p.platform ?? []),
    ...root,
    // A guest panic reboots after 1 s; the VMMs run with reboot turned into exit, so a dead guest ends the VM.
    "panic=1",
    ...taskParams({
      sharefsType: p.sharefs,
      logLevel: config.sandbox.log_level || "info",
      hybridVsock: p.hybridVsock,
      debug: h.task.debug,
      enableTracing: h.task.enable_tracing,
    }),
    h.kernel_params.trim(),
    (sandbox.kernelParams ?? "").trim(),
  ]
    .filter((s) => s !== "")
    .join(" ");
}

const C_LEVEL: Record<string, string> = {
  error: "err",
  warn: "warn",
  info: "info",
  debug: "debug",
  trace: "debug",
  off: "err",
};
const C_CACHE: Record<string, string> = { never: "none", auto: "auto", always: "always" };

/** virtiofsd serving the share on <dir>/virtiofs.sock, with flags for the C (QEMU 7.2) or the Rust implementation. */
export function virtiofsd(config: Config, sandbox: SandboxSpec, dialect: VirtiofsdDialect): HelperSpec {
  const v = config.hypervisor.virtiofsd;
  const socket = path.join(sandbox.dir, "virtiofs.sock");
  let args: string[];
  if (dialect === "c") {
    const cache = C_CACHE[v.cache];
    if (!cache)
      throw new Error(`hypervisor.virtiofsd.cache = "${v.cache}" needs the Rust virtiofsd; ${v.path} is QEMU's C one`);
    args = [
      `--socket-path=${socket}`,
      "-o",
      `source=${sandbox.shareDir}`,
      "-o",
      `cache=${cache}`,
      "-o",
      `log_level=${C_LEVEL[v.log_level]}`,
      // The share holds mounts (container rootfs, binds): submounts keep their inode numbers apart.
      "-o",
      "announce_submounts",
    ];
    if (v.thread_pool_size > 0) args.push(`--thread-pool-size=${v.thread_pool_size}`);
  } else {
    args = [
      ...["--socket-path", socket, "--shared-dir", sandbox.shareDir, "--cache", v.cache],
      ...["--log-level", v.log_level, "--announce-submounts"],
    ];
    if (v.thread_pool_size > 0) args.push("--thread-pool-size", String(v.thread_pool_size));
  }
  if (v.syslog) args.push("--syslog");
  args.push(...config.hypervisor.virtiofs_extra_args);
  return {
    name: "virtiofsd",
    path: v.path,
    args,
    logFile: path.join(sandbox.dir, "virtiofsd.log"),
    readyPath: socket,
  };
}

/**
 * Hybrid vsock for QEMU: vhost-device-vsock is the device backend (vhost-user) and exposes the guest's vsock ports
 * with the same CONNECT protocol as cloud-hypervisor. It parses guest-controlled virtqueues, so it works in vsock/, a
 * directory of its own (owned by the sandbox's helper uid, which it runs under when sandbox.helper_uid_base is set),
 * naming its sockets relative to it: it never needs to pass through the sandbox directory, which stays root's (its
 * argv[0] still names the directory, for ps and the leftover sweep). The daemon links the sockets into the sandbox
 * directory: `socket` for QEMU's chardev, `uds` for the agent.
 */
export function vhostDeviceVsock(config: Config, sandbox: SandboxSpec): HelperSpec & { socket: string; uds: string } {
  const own = path.join(sandbox.dir, "vsock");
  const [socket, uds] = ["vhost-vsock.sock", "task.vsock"];
  return {
    name: "vhost-device-vsock",
    path: config.hypervisor.vhost_user_vsock_path,
    args: ["--guest-cid", "3", "--socket", socket, "--uds-path", uds],
    argv0: path.join(own, "vhost-device-vsock"),
    logFile: path.join(sandbox.dir, "vhost-device-vsock.log"),
    ownDir: own,
    readyPath: path.join(own, socket),
    publish: [socket, uds].map((f) => ({ from: path.join(own, f), to: path.join(sandbox.dir, f) })),
    socket: path.join(sandbox.dir, socket),
    uds: path.join(sandbox.dir, uds),
  };
}

/** A random guest CID for vhost-vsock: 3 and up (0-2 are reserved), below 2^32-1 (VMADDR_CID_ANY). */
export function randomCid(): number {
  return 3 + Math.floor(Math.random() * (0xffff_fffe - 3));
}
