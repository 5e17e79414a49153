import path from "node:path";
import type { Choice, HostProbes } from "../host.ts";
import type { HelperSpec } from "../vm.ts";
import type { SandboxSpec } from "../vm-api.ts";
import type { QemuConfig } from "./config.ts";

export type VsockMode = "vhost" | "hybrid";

/** vhost-vsock where the host has it, else hybrid vsock through vhost-device-vsock. */
export async function chooseVsock(
  wanted: "auto" | VsockMode,
  helperPath: string,
  probes: HostProbes,
): Promise<Choice<VsockMode>> {
  const vhost = await probes.exists("/dev/vhost-vsock");
  const helper = await probes.executable(helperPath);
  const noHelper = `${helperPath} is missing (apt-get install vhost-device-vsock, or set hypervisor.vhost_user_vsock_path)`;
  if (wanted === "vhost") {
    if (!vhost)
      throw new Error('hypervisor.vsock_mode = "vhost" but /dev/vhost-vsock does not exist: modprobe vhost_vsock');
    return { value: "vhost", reason: "vsock_mode asks for vhost" };
  }
  if (wanted === "hybrid") {
    if (!helper) throw new Error(`hypervisor.vsock_mode = "hybrid" but ${noHelper}`);
    return { value: "hybrid", reason: "vsock_mode asks for hybrid" };
  }
  if (vhost) return { value: "vhost", reason: "/dev/vhost-vsock exists" };
  if (!helper)
    throw new Error(`no vsock transport: /dev/vhost-vsock does not exist (modprobe vhost_vsock) and ${noHelper}`);
  return { value: "hybrid", reason: `/dev/vhost-vsock does not exist; using ${helperPath}` };
}

/** The transport the QEMU driver takes on this host (the doctor asks the same). */
export function qemuVsock(config: QemuConfig, probes: HostProbes): Promise<Choice<VsockMode>> {
  return chooseVsock(config.hypervisor.vsock_mode, config.hypervisor.vhost_user_vsock_path, probes);
}

/**
 * Hybrid vsock for QEMU: vhost-device-vsock is the device backend (vhost-user) and exposes the guest's vsock ports
 * with the same CONNECT protocol as cloud-hypervisor. It parses guest-controlled virtqueues, so it works in vsock/, a
 * directory of its own (owned by the sandbox's helper uid, which it runs under when sandbox.helper_uid_base is set),
 * naming its sockets relative to it: it never needs to pass through the sandbox directory, which stays root's (its
 * argv[0] still names the directory, for ps and the leftover sweep). The daemon links the sockets into the sandbox
 * directory: `socket` for QEMU's chardev, `uds` for the agent.
 */
export function vhostDeviceVsock(
  config: QemuConfig,
  sandbox: SandboxSpec,
): HelperSpec & { socket: string; uds: string } {
  const own = path.join(sandbox.dir, "vsock");
  const [socket, uds] = ["vhost-vsock.sock", "task.vsock"];
  return {
    name: "vhost-device-vsock",
    path: config.hypervisor.vhost_user_vsock_path,
    args: ["--guest-cid", "3", "--socket", socket, "--uds-path", uds],
    argv0: path.join(own, "vhost-device-vsock"),
    logFile: path.join(sandbox.dir, "vhost-device-vsock.log"),
    ownDir: own,
    uids: { base: config.sandbox.helper_uid_base, count: config.sandbox.helper_uid_count },
    readyPath: path.join(own, socket),
    publish: [socket, uds].map((f) => ({ from: path.join(own, f), to: path.join(sandbox.dir, f) })),
    socket: path.join(sandbox.dir, socket),
    uds: path.join(sandbox.dir, uds),
  };
}
