import path from "node:path";
import type { CommonConfig } from "../config/common-tables.ts";
import type { VirtiofsdDialect } from "./host.ts";
import type { HelperSpec } from "./vm.ts";
import type { SandboxSpec } from "./vm-api.ts";

// virtiofsd's command line: a host helper the VMM connects to over vhost-user.

const C_LEVEL: Record<string, string> = {
  error: "err",
  warn: "warn",
  info: "info",
  debug: "debug",
  trace: "debug",
  off: "err",
};
const C_CACHE: Record<string, string> = { never: "none", auto: "auto", always: "always" };

/**
 * virtiofsd serving the share on <dir>/virtiofs.sock, with flags for the C (QEMU 7.2) or the Rust implementation and
 * extraArgs (QEMU's virtiofs_extra_args) last.
 */
export function virtiofsd(
  config: CommonConfig,
  sandbox: SandboxSpec,
  dialect: VirtiofsdDialect,
  extraArgs: readonly string[],
): HelperSpec {
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
  args.push(...extraArgs);
  return {
    name: "virtiofsd",
    path: v.path,
    args,
    logFile: path.join(sandbox.dir, "virtiofsd.log"),
    readyPath: socket,
  };
}
