import { type FSWatcher, watch } from "node:fs";
import { open, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { CgroupStats } from "../cgroups/stats.ts";
import { showsAgentReady } from "../contract/readiness.ts";
import { Task } from "../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Streaming } from "../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { SandboxService } from "../protos/gen/kuasar/sandbox_pb.ts";
import { openStream } from "../streaming/open.ts";
import { dial } from "../transport/address.ts";
import { type TtrpcClient, TtrpcServer } from "../ttrpc/index.ts";
import { connectAgent, syncGuestClock } from "./agent.ts";
import type { Config } from "./config/schema.ts";
import type { EventPublisher } from "./events.ts";
import { GuestEventForwarder } from "./guest-events.ts";
import {
  type AgentAddress,
  agentUrl,
  createHypervisor,
  defaultEnv,
  type Hypervisor,
  type HypervisorState,
  recoverHypervisor,
} from "./hypervisor/index.ts";
import { killSandboxProcesses } from "./hypervisor/leftovers.ts";
import type { Logger } from "./log.ts";
import { attachPodNetwork, detachPodNetwork, type Nic, type PodNetwork } from "./network/pod-network.ts";
import { PortForwarder } from "./network/port-forward.ts";
import { PodCgroup, type PodResources } from "./pod-cgroup.ts";
import type { Launcher, SandboxRecord } from "./sandbox/record.ts";
import { type PodConfigJson, writeShareFiles } from "./share-files.ts";
import { isMountPoint } from "./storage/mount.ts";
import { createShareDirs, mountShare, type ShareLayout, shareLayout, unmountAllUnder } from "./storage/share.ts";
import { TaskProxy } from "./task-proxy/proxy.ts";
import { ContainerRecords } from "./task-proxy/records.ts";
import { vmSize } from "./vm-size.ts";

/** After a daemon restart a live agent answers at once: fail fast and clean up instead. */
const RECOVER_AGENT_DEADLINE_MS = 3_000;
const CLOCK_SYNC_MS = 60_000;
/** Past this a guest that does not log the line (quieter log level) is dialled anyway. */
const AGENT_CONSOLE_WAIT_MS = 60_000;

/** What sandbox.json keeps for the launcher. */
interface RuntimeState {
  vm: HypervisorState;
  agent: AgentAddress;
  nics: Nic[];
}

interface Running {
  vm: Hypervisor;
  agent: TtrpcClient;
  proxy: TaskProxy;
  server: TtrpcServer;
  net?: Pick<PodNetwork, "nsPath" | "nics">;
  portForwarder?: PortForwarder;
  timers: NodeJS.Timeout[];
}

/** Runs each sandbox as a VM: hypervisor + pod network + guest agent + the per-sandbox task API for containerd. */
export class VmLauncher implements Launcher {
  private running = new Map<string, Running>();

  constructor(
    private readonly config: Config,
    private readonly events: EventPublisher,
    private readonly log: Logger,
  ) {}

  async prepare(rec: SandboxRecord, dir: string): Promise<void> {
    const share = shareLayout(dir);
    await createShareDirs(share);
    await writeShareFiles(share.mounts, rec.podConfig as PodConfigJson | undefined);
  }

  private records(dir: string, share: ShareLayout, log: Logger): ContainerRecords {
    return new ContainerRecords(path.join(dir, "containers"), share, log);
  }

  async start(
    rec: SandboxRecord,
    dir: string,
    signal?: AbortSignal,
  ): Promise<{ pid: number; taskAddress: string; runtime: unknown }> {
    const log = this.log.child(rec.id);
    // Checked between the steps of a boot and in its waits: a caller that gave up gets its VM stopped at once.
    const cancelled = () => signal?.aborted === true;
    const proceed = (step: string) => {
      if (cancelled()) throw new Error(`start cancelled by the caller (${step})`);
    };
    const cgroup = podCgroupOf(rec);
    if (cgroup) {
      await cgroup.create().catch((err: Error) => {
        throw new Error(`sandbox ${rec.id}: cannot create its pod cgroup ${cgroup.cgroup}: ${err.message}`);
      });
      log.info(`VMM and helpers run in cgroup ${cgroup.cgroup}`);
    }
    const h = this.config.hypervisor;
    const size = vmSize(
      { vcpus: h.vcpus, memoryMiB: h.memory_in_mb, maxVcpus: h.default_max_vcpus },
      (rec.podConfig as PodConfigJson | undefined)?.linux?.resources,
    );
    log.info(`VM size ${size.vcpus} vCPU / ${size.memoryMiB} MiB: ${size.why}`);
    // Before the VMM exports shared/: the guest's view is read-only at the top from its first access. Undone by
    // release(), which the manager runs after a failed start.
    await mountShare(shareLayout(dir));
    proceed("share");
    const net = rec.netnsPath ? await attachPodNetwork(rec.netnsPath) : undefined;
    let vm: Hypervisor | undefined;
    try {
      proceed("network");
      vm = createHypervisor(
        this.config,
        {
          id: rec.id,
          dir,
          shareDir: shareLayout(dir).shared,
          ...(rec.netnsPath ? { netnsPath: rec.netnsPath } : {}),
          netDevices: (net?.nics ?? []).map((n) => ({ tapName: n.tap, mac: n.mac, mtu: n.mtu })),
          vcpus: size.vcpus,
          memoryMiB: size.memoryMiB,
          ...(cgroup ? { cgroupProcs: cgroup.procsFiles() } : {}),
        },
        defaultEnv(log),
      );
      const t0 = Date.now();
      const agentTimeout = this.config.sandbox.agent_timeout_ms;
      const started = await vm.start();
      proceed("VMM started");
      log.info(`vmm pid ${started.pid} started; waiting for the agent at ${agentUrl(started.agentAddress)}`);
      let exited = false;
      void vm.wait().then(() => {
        exited = true;
      });
      // vhost-device-vsock 0.3 can wedge for good (accepts, never answers CONNECT) when dialled before the guest's
      // vsock driver is up; hold the first dial until the guest agent says it listens, falling back to dialling.
      if (started.agentAddress.kind === "hvsock") {
        await waitForConsole(
          started.consoleLog,
          showsAgentReady,
          Math.min(AGENT_CONSOLE_WAIT_MS, agentTimeout),
          () => !exited && !cancelled(),
        );
        proceed("waiting for the agent");
      }
      const agent = await connectAgent(() => dial(agentUrl(started.agentAddress), { timeoutMs: 2000 }), {
        deadlineMs: Math.max(1000, t0 + agentTimeout - Date.now()),
        alive: () => !exited && !cancelled(),
      }).catch(async (err: Error) => {
        proceed("waiting for the agent");
        throw new Error(
          `${err.message} (sandbox.agent_timeout_ms = ${agentTimeout} from the VMM's start)\n` +
            `last console lines (${started.consoleLog}):\n${await tail(started.consoleLog, 15)}`,
        );
      });
      log.info(`agent answered ${((Date.now() - t0) / 1000).toFixed(1)} s after the VMM started`);
      // Without a KVM clock the guest boots at the epoch: its clock is set before any container runs, alongside
      // SetupSandbox rather than after it.
      await Promise.all([
        agent.service(SandboxService).setupSandbox(
          {
            config: { typeUrl: "PodSandboxConfig", value: Buffer.from(JSON.stringify(rec.podConfig ?? {})) },
            interfaces: net?.interfaces ?? [],
            routes: net?.routes ?? [],
          },
          signal ? { signal } : {},
        ),
        syncGuestClock(agent).catch((e: Error) => log.warn(`clock sync: ${e.message}`)),
      ]).catch((err: Error) => {
        agent.close();
        proceed("SetupSandbox");
        throw err;
      });
      if (cancelled()) agent.close();
      proceed("SetupSandbox");
      await this.serve(rec, dir, vm, agent, net);
      const runtime: RuntimeState = { vm: vm.persistState(), agent: started.agentAddress, nics: net?.nics ?? [] };
      return { pid: started.pid, taskAddress: `ttrpc+unix://${path.join(dir, "task.sock")}`, runtime };
    } catch (err) {
      if (vm) {
        await vm.stop(0).catch(() => undefined);
        await vm.cleanup().catch(() => undefined);
      }
      if (net) await detachPodNetwork(net).catch(() => undefined);
      await cgroup?.remove().catch((e: Error) => log.warn(e.message));
      throw err;
    }
  }

  /** Serves containerd's task API for the sandbox and keeps the guest clock (synced every minute) and events flowing. */
  private async serve(
    rec: SandboxRecord,
    dir: string,
    vm: Hypervisor,
    agent: TtrpcClient,
    pod: Pick<PodNetwork, "nsPath" | "nics"> | undefined,
  ): Promise<void> {
    const log = this.log.child(rec.id);
    const sock = path.join(dir, "task.sock");
    const share = shareLayout(dir);
    const proxy = new TaskProxy({
      sandboxId: rec.id,
      taskAddress: `ttrpc+unix://${sock}`,
      records: this.records(dir, share, log),
      share,
      agent: () => agent,
      events: this.events,
      nextStorage: () => rec.nextStorage++,
      log,
    });
    const tasks = proxy.handlers();
    const server = new TtrpcServer()
      .register(Task, tasks)
      .registerAs("containerd.task.v2.Task", Task, tasks)
      .register(Streaming, proxy.streamingHandlers());
    await rm(sock, { force: true });
    const listener = net.createServer();
    server.serve(listener);
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(sock, resolve);
    });
    const sync = () => syncGuestClock(agent).catch((e: Error) => log.debug(`clock sync: ${e.message}`));
    const timers = [setInterval(sync, CLOCK_SYNC_MS)];
    for (const t of timers) t.unref();
    // containerd's PortForward dials localhost in the pod's netns: carried into the guest from there.
    const portForwarder = pod
      ? await PortForwarder.start({ nsPath: pod.nsPath, openStream: (id) => openStream(agent, id), log }).catch(
          (e: Error) => {
            log.warn(`${e.message}; port-forward into this pod is unavailable`);
            return undefined;
          },
        )
      : undefined;
    this.running.set(rec.id, {
      vm,
      agent,
      proxy,
      server,
      ...(pod ? { net: pod } : {}),
      ...(portForwarder ? { portForwarder } : {}),
      timers,
    });
    void this.forwardGuestEvents(rec.id, agent, proxy);
  }

  /** Task start, exit and OOM events are the guest's: they reach containerd through the daemon. */
  private async forwardGuestEvents(id: string, agent: TtrpcClient, proxy: TaskProxy): Promise<void> {
    const svc = agent.service(SandboxService);
    // Admitted only for this sandbox's containers, in the namespace containerd created each in; paced.
    const guest = new GuestEventForwarder(this.events, id, (c) => proxy.namespaceOf(c), this.log.child(id));
    for (;;) {
      const r = this.running.get(id);
      if (!r || r.agent !== agent) return;
      const ev = await svc.getEvents({}).catch(() => undefined);
      if (!ev) return;
      await guest.forward(ev);
    }
  }

  async waitExit(rec: SandboxRecord): Promise<{ exitStatus: number; exitedAt: Date }> {
    const r = this.running.get(rec.id);
    if (!r) throw new Error(`sandbox ${rec.id} has no running VM`);
    return r.vm.wait();
  }

  /** Asks the agent to power the guest off (it ignores ACPI), then lets the hypervisor escalate as needed. */
  async stop(rec: SandboxRecord, _dir: string, timeoutMs: number): Promise<void> {
    const r = this.running.get(rec.id);
    if (!r) return;
    await r.agent
      .service(Task)
      .shutdown({ id: rec.id, now: true }, { timeoutMs: 2000 })
      .catch((e: Error) => this.log.debug(`${rec.id}: agent shutdown: ${e.message}`));
    await r.vm.stop(timeoutMs);
  }

  async release(rec: SandboxRecord, dir: string): Promise<void> {
    const r = this.running.get(rec.id);
    this.running.delete(rec.id);
    if (r) {
      for (const t of r.timers) clearInterval(t);
      r.agent.close();
      await r.portForwarder?.close();
      await r.server.close();
      await r.proxy.releaseAll();
      await r.vm.cleanup();
    } else {
      // Not served by this daemon (a failed start or recovery): the records still say what is mounted.
      await this.records(dir, shareLayout(dir), this.log.child(rec.id)).releaseAll();
    }
    // Its events still waiting for containerd (only while containerd is unreachable) go with it.
    this.events.forget(rec.id);
    const state = rec.runtime as RuntimeState | undefined;
    const net =
      r?.net ?? (rec.netnsPath && state?.nics.length ? { nsPath: rec.netnsPath, nics: state.nics } : undefined);
    if (net) await detachPodNetwork(net);
    // The share's own mounts and anything a record did not name: nothing stays mounted under the sandbox.
    await unmountAllUnder(dir);
    await podCgroupOf(rec)?.remove();
    await rm(path.join(dir, "task.sock"), { force: true });
  }

  /** The pod cgroup's numbers (the VMM and its helpers), for Controller.Metrics. */
  async stats(rec: SandboxRecord): Promise<CgroupStats | undefined> {
    return podCgroupOf(rec)?.stats();
  }

  /** Pod resources (CPU, memory limits) applied to the pod cgroup. */
  async update(rec: SandboxRecord, resources: PodResources): Promise<void> {
    const cgroup = podCgroupOf(rec);
    if (!cgroup) throw new Error(`sandbox ${rec.id} has no pod cgroup (its PodSandboxConfig has no cgroup_parent)`);
    await cgroup.update(resources);
  }

  async recover(rec: SandboxRecord, dir: string): Promise<{ ok: true } | { ok: false; reason: string }> {
    const state = rec.runtime as RuntimeState | undefined;
    if (!state?.vm) return { ok: false, reason: "sandbox.json has no VM state" };
    let vm: Hypervisor;
    try {
      vm = await recoverHypervisor(state.vm, defaultEnv(this.log.child(rec.id)));
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    if (!(await isMountPoint(shareLayout(dir).mounts))) {
      // Started by a version whose share the guest could write where the host mounts: not kept running.
      await vm.stop(0).catch(() => undefined);
      await vm.cleanup().catch(() => undefined);
      return {
        ok: false,
        reason: "its share has the old, guest-writable layout (started by an earlier vmm-sandboxer)",
      };
    }
    let agent: TtrpcClient;
    try {
      agent = await connectAgent(() => dial(agentUrl(state.agent), { timeoutMs: 1000 }), {
        deadlineMs: RECOVER_AGENT_DEADLINE_MS,
      });
    } catch (err) {
      await vm.stop(0).catch(() => undefined);
      await vm.cleanup().catch(() => undefined);
      return { ok: false, reason: (err as Error).message };
    }
    const net = rec.netnsPath && state.nics.length ? { nsPath: rec.netnsPath, nics: state.nics } : undefined;
    await syncGuestClock(agent).catch((e: Error) => this.log.debug(`${rec.id}: clock sync: ${e.message}`));
    await this.serve(rec, dir, vm, agent, net);
    const reaped = await this.running.get(rec.id)!.proxy.reapOrphans();
    if (reaped.length) {
      this.log.info(
        `sandbox ${rec.id}: stopped ${reaped.length} container(s) containerd recorded as exited when the daemon went away: ${reaped.join(", ")}`,
      );
    }
    return { ok: true };
  }

  /**
   * A sandbox directory whose sandbox.json cannot be read: its VMM (named by the pid file the driver wrote) and
   * helpers are killed, and its mounts freed from the container records and then whatever is left under it.
   */
  async discard(dir: string): Promise<void> {
    await killSandboxProcesses(dir, this.log);
    await this.records(dir, shareLayout(dir), this.log).releaseAll();
    await unmountAllUnder(dir);
  }

  /** Daemon shutdown: stop serving but leave every VM running (KillMode=process). */
  async detachAll(): Promise<void> {
    for (const r of this.running.values()) {
      for (const t of r.timers) clearInterval(t);
      r.agent.close();
      await r.portForwarder?.close();
      await r.server.close();
      r.vm.detach();
    }
    this.running.clear();
  }
}

function podCgroupOf(rec: SandboxRecord): PodCgroup | undefined {
  const parent = (rec.podConfig as PodConfigJson | undefined)?.linux?.cgroupParent;
  return parent ? PodCgroup.resolve(parent, rec.id) : undefined;
}

/** Polls the console log until its tail shows `seen`; gives up quietly after ms or when alive() turns false. */
async function waitForConsole(
  file: string,
  seen: (tail: string) => boolean,
  ms: number,
  alive: () => boolean,
): Promise<void> {
  const until = Date.now() + ms;
  // inotify wakes us as soon as the VMM appends; the timeout covers file systems without it.
  let wake = () => {};
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(file, () => wake());
    watcher.on("error", () => watcher?.close());
  } catch {
    // polled below
  }
  try {
    while (Date.now() < until && alive()) {
      if (seen(await tail(file, 200))) return;
      await new Promise<void>((r) => {
        const t = setTimeout(r, 250);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  } finally {
    watcher?.close();
  }
}

/** The last lines of a console log, for errors that need the guest's side of the story. */

async function tail(file: string, lines: number): Promise<string> {
  try {
    const fh = await open(file, "r");
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 16384);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString("utf8").split("\n").slice(-lines).join("\n");
    } finally {
      await fh.close();
    }
  } catch (err) {
    return `(unreadable: ${(err as Error).message})`;
  }
}
