/**
 * The VM of one sandbox as the daemon drives it, whichever VMM runs it: what a driver is given (SandboxSpec), what it
 * does (Hypervisor) and what it records (HypervisorState). No driver is imported here; registry.ts has the drivers.
 */
import type { Logger } from "../../log/log.ts";
import type { HostProbes } from "./host.ts";
import type { HypervisorKind } from "./names.ts";
import type { ProcRef } from "./process.ts";

/** One VM NIC, standing in for a veth of the pod netns. */
export interface NetDevice {
  /** The tap inside the sandbox netns (tap_kua_<ifindex>). */
  tapName: string;
  /**
   * Already-open tap queue fds in this process. They are handed to the VMM as fd 3, 4, ...; without them the VMM
   * opens tapName itself and so runs inside netnsPath.
   */
  fds?: number[];
  /** Queues when the VMM opens tapName itself (default 1; more needs a multi-queue tap). With fds: one per fd. */
  queues?: number;
  mac: string;
  mtu: number;
}

/** What the daemon knows about the sandbox whose VM this is. */
export interface SandboxSpec {
  id: string;
  /** <--dir>/<id>: sockets, logs and the pid file live here. */
  dir: string;
  /** <dir>/shared, exported to the guest with mount tag "kuasar". */
  shareDir: string;
  /** Override the configured vcpus / memory_in_mb (pod resources). */
  vcpus?: number;
  memoryMiB?: number;
  /** The pod network namespace; the VMM runs in it when a NIC has no fds. */
  netnsPath?: string;
  netDevices: NetDevice[];
  /** Appended to the kernel command line after the configured kernel_params. */
  kernelParams?: string;
  /** cgroup.procs files the VMM and its helpers join before they exec (the pod cgroup). */
  cgroupProcs?: string[];
}

/** Where the guest agent (vmm-task, ttrpc on vsock port 1024) is reached. */
export type AgentAddress =
  /** Hybrid vsock: connect to udsPath and send "CONNECT <port>\n"; the answer is "OK <port>\n". */
  { kind: "hvsock"; udsPath: string; port: number } | { kind: "vsock"; cid: number; port: number };

/** Kuasar's address strings: hvsock://<uds>:<port> and vsock://<cid>:<port>. */
export function agentUrl(a: AgentAddress): string {
  return a.kind === "hvsock" ? `hvsock://${a.udsPath}:${a.port}` : `vsock://${a.cid}:${a.port}`;
}

export interface Started {
  /** The VMM's own pid (never 0). */
  pid: number;
  agentAddress: AgentAddress;
  /** The guest's serial console, <dir>/console.log. */
  consoleLog: string;
}

export interface Exit {
  /** The VMM's exit code, 128 + signal when killed, 255 when it is unknown (a VMM this process did not start). */
  exitStatus: number;
  exitedAt: Date;
}

export interface VmStatus {
  state: "running" | "paused" | "shutdown" | "exited" | "unresponsive";
  /** The VMM's own word for it (QMP query-status, cloud-hypervisor vm.info state) or why it is unknown. */
  detail: string;
}

export interface DiskSpec {
  /** Device id, also the disk's serial (so the guest finds it in /sys/block/<dev>/serial): 1-20 of [A-Za-z0-9_-]. */
  id: string;
  /** Host file or block device. */
  path: string;
  readOnly: boolean;
}

/** A VM's vCPUs and memory now, and the most it was started able to take. */
export interface VmShape {
  vcpus: number;
  memoryMiB: number;
  maxVcpus: number;
  maxMemoryMiB: number;
}

/**
 * How a removal ended: "removed" (the guest released the device and the VMM dropped it), or "cut-off" (the guest did
 * not release it in time; the VMM no longer holds the host file, but the guest still sees an empty disk).
 */
export type DeviceRemoval = "removed" | "cut-off";

export interface HelperState extends ProcRef {
  name: string;
}

/** What persistState() returns and recover() takes; plain JSON, stored in sandbox.json. */
export interface HypervisorState {
  kind: HypervisorKind;
  id: string;
  dir: string;
  vmm?: ProcRef;
  helpers: HelperState[];
  agentAddress?: AgentAddress;
  consoleLog: string;
  /**
   * The VMM's serial console socket, read into consoleLog with rotation at maxBytes (kept as the VM was started);
   * absent for a VM an earlier daemon started with its console written straight to consoleLog.
   */
  console?: { socket: string; maxBytes: number };
  /** QMP or cloud-hypervisor API socket. */
  controlSocket: string;
  /** Files to remove once the VM is gone. */
  files: string[];
  /** Hot-plugged devices by id, with what removing them needs. */
  devices: Record<string, { node?: string; bus?: string }>;
  /** Driver-specific facts recovery needs (e.g. the disk transport). */
  extra: Record<string, string | number | boolean>;
  cgroupProcs?: string[];
  /** The uid (and gid) the sandbox's vsock helper runs under (sandbox.helper_uid_base); absent when it runs as root. */
  helperUid?: number;
  /** Directories made for helpers to work in, removed with what they hold once the VM is gone. */
  helperDirs?: string[];
}

/** The VM of one sandbox, as the daemon drives it. */
export interface Hypervisor {
  readonly kind: HypervisorKind;
  readonly id: string;
  /**
   * Starts helpers (virtiofsd, vhost-device-vsock), then the VMM, detached so they survive a daemon restart, and
   * resolves once the VMM's control socket answers. On failure everything started is stopped again.
   */
  start(): Promise<Started>;
  /**
   * Asks the guest to power off (ACPI), after timeoutMs tells the VMM to quit, and kills it if that does not work
   * either. Resolves with the exit once the VMM and its helpers are gone.
   */
  stop(timeoutMs: number): Promise<Exit>;
  /** Resolves when the VMM has exited, however that happened, and its helpers are cleaned up. */
  wait(): Promise<Exit>;
  status(): Promise<VmStatus>;
  /** Hot-plugs a disk; resolves with the serial the guest sees. */
  hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }>;
  /**
   * Unplugs a device and waits, at most timeoutMs, for the guest to release it. An id this driver did not plug (an
   * earlier daemon did) is removed too; over QMP one the VMM does not know counts as removed.
   */
  removeDevice(id: string, opts?: { timeoutMs?: number }): Promise<DeviceRemoval>;
  /** vCPUs and memory as the VMM reports them now, with the VM's ceilings. */
  size(): Promise<VmShape>;
  /**
   * Hot-plugs vCPUs and memory until the VM has at least `target` (never removes any). Throws, naming the config
   * key, when the VM was not started able to grow that far or this VMM cannot hot-plug them.
   */
  grow(target: { vcpus: number; memoryMiB: number }): Promise<void>;
  persistState(): HypervisorState;
  /** Stops helpers and the console reader, removes sockets and the pid file; safe to call more than once. */
  cleanup(): Promise<void>;
  /**
   * Lets go of the VM without stopping it (daemon shutdown): closes the control and console connections, which
   * recover() reopens.
   */
  detach(): void;
}

export interface DriverEnv {
  probes: HostProbes;
  log: Logger;
  /** How often a VMM this process did not start is checked for exit. */
  pollMs: number;
}
