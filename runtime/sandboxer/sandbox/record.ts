import type { CgroupStats } from "../../cgroups/stats.ts";
import type { PodResources } from "./pod-cgroup.ts";
/** What the daemon persists per sandbox in <dir>/<id>/sandbox.json: enough to recover it after a restart. */
export interface SandboxRecord {
  id: string;
  state: "created" | "running" | "stopped";
  createdAt: string;
  startedAt?: string;
  exitedAt?: string;
  exitStatus?: number;
  netnsPath: string;
  /** CRI PodSandboxConfig as protobuf JSON (hostname, dns, cgroup parent, sysctls...). */
  podConfig?: unknown;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  /** VMM pid while running (Status.pid; containerd puts /proc/<pid>/ns paths into specs, the guest drops them). */
  pid?: number;
  /** ttrpc+unix address of this sandbox's task API. */
  taskAddress?: string;
  /**
   * Whatever the launcher needs to reconnect to or clean up the VM (hypervisor state, taps, helpers): for VmLauncher a
   * RuntimeState (runtime-state.ts), which it reads back through runtimeStateOf.
   */
  runtime?: unknown;
  /** Next storage<N> index in the share (a hint: taken names are skipped). */
  nextStorage: number;
}

export interface ExitInfo {
  exitStatus: number;
  exitedAt: Date;
}

/** What the manager needs from the machinery that runs a sandbox's VM. */
export interface Launcher {
  /** Prepares the share (hostname, hosts, resolv.conf) for a new sandbox. */
  prepare(rec: SandboxRecord, dir: string): Promise<void>;
  /**
   * Boots the VM, connects to the agent, sets the sandbox up and serves the task API. Rejects soon after `signal`
   * aborts (the caller gave up), having stopped what it started.
   */
  start(
    rec: SandboxRecord,
    dir: string,
    signal?: AbortSignal,
  ): Promise<{ pid: number; taskAddress: string; runtime: unknown }>;
  /** Resolves when the VM of a running sandbox exits, however that happens. */
  waitExit(rec: SandboxRecord, dir: string): Promise<ExitInfo>;
  /** Asks the VM to stop, forcing it after timeoutMs. */
  stop(rec: SandboxRecord, dir: string, timeoutMs: number): Promise<void>;
  /** Releases everything the sandbox holds on the host after its VM is gone (taps, mounts, helpers, task socket). */
  release(rec: SandboxRecord, dir: string): Promise<void>;
  /** Resource usage of the sandbox on the host (its pod cgroup), or undefined when it has none. */
  stats(rec: SandboxRecord): Promise<CgroupStats | undefined>;
  /** Applies pod-level resources to the sandbox on the host. */
  update(rec: SandboxRecord, resources: PodResources): Promise<void>;
  /** A sandbox directory whose record is unreadable: stop what it still runs and free its mounts. */
  discard(dir: string): Promise<void>;
  /** After a daemon restart: reattach to a running VM, or say why it cannot be. */
  recover(rec: SandboxRecord, dir: string): Promise<{ ok: true } | { ok: false; reason: string }>;
}
