import type { CgroupStats } from "../../cgroups/stats.ts";
import type { Logger } from "../../log/log.ts";
import { Task } from "../../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import type { Config } from "../config/schema.ts";
import type { EventPublisher } from "../events.ts";
import type { Hypervisor } from "../hypervisor/vm-api.ts";
import { boot } from "./boot.ts";
import type { PodResources } from "./pod-cgroup.ts";
import { reattach } from "./reattach.ts";
import type { ExitInfo, Launcher, SandboxRecord } from "./record.ts";
import {
  containerRecords,
  discardDir,
  type PodTaps,
  podCgroupOf,
  prepareShare,
  releaseHost,
  taskSocketOf,
  unwind,
} from "./resources.ts";
import type { RuntimeState } from "./runtime-state.ts";
import { type Served, serve } from "./serve.ts";

/** A sandbox this daemon serves: its VM, its task API and the taps it attached. */
interface Running {
  vm: Hypervisor;
  served: Served;
  net?: PodTaps;
}

/** Runs each sandbox as a VM: hypervisor + pod network + guest agent + the per-sandbox task API for containerd. */
export class VmLauncher implements Launcher {
  private running = new Map<string, Running>();

  constructor(
    private readonly config: Config,
    private readonly events: EventPublisher,
    private readonly log: Logger,
  ) {}

  prepare(rec: SandboxRecord, dir: string): Promise<void> {
    return prepareShare(rec, dir);
  }

  async start(
    rec: SandboxRecord,
    dir: string,
    signal?: AbortSignal,
  ): Promise<{ pid: number; taskAddress: string; runtime: RuntimeState }> {
    const log = this.log.child(rec.id);
    const booted = await boot(rec, dir, this.config, log, signal);
    let served: Served;
    try {
      served = await serve(rec, dir, booted.agent, booted.net, { events: this.events, log, vm: booted.vm });
    } catch (err) {
      booted.agent.close();
      await unwind(booted, log);
      throw err;
    }
    this.running.set(rec.id, { vm: booted.vm, served, ...(booted.net ? { net: booted.net } : {}) });
    const runtime: RuntimeState = {
      vm: booted.vm.persistState(),
      agent: booted.agentAddress,
      nics: booted.net?.nics ?? [],
    };
    return { pid: booted.pid, taskAddress: `ttrpc+unix://${taskSocketOf(dir)}`, runtime };
  }

  async waitExit(rec: SandboxRecord): Promise<ExitInfo> {
    const r = this.running.get(rec.id);
    if (!r) throw new Error(`sandbox ${rec.id} has no running VM`);
    return r.vm.wait();
  }

  /** Asks the agent to power the guest off (it ignores ACPI), then lets the hypervisor escalate as needed. */
  async stop(rec: SandboxRecord, _dir: string, timeoutMs: number): Promise<void> {
    const r = this.running.get(rec.id);
    if (!r) return;
    await r.served.agent
      .service(Task)
      .shutdown({ id: rec.id, now: true }, { timeoutMs: 2000 })
      .catch((e: Error) => this.log.debug(`${rec.id}: agent shutdown: ${e.message}`));
    await r.vm.stop(timeoutMs);
  }

  async release(rec: SandboxRecord, dir: string): Promise<void> {
    const r = this.running.get(rec.id);
    this.running.delete(rec.id);
    if (r) {
      await r.served.close();
      await r.served.proxy.releaseAll();
      await r.vm.cleanup();
    } else {
      // Not served by this daemon (a failed start or recovery): the records still say what is mounted.
      await containerRecords(dir, this.log.child(rec.id)).releaseAll();
    }
    // Its events still waiting for containerd (only while containerd is unreachable) go with it.
    this.events.forget(rec.id);
    await releaseHost(rec, dir, r?.net);
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
    const r = await reattach(rec, dir, this.log);
    if (!r.ok) return r;
    const served = await serve(rec, dir, r.agent, r.net, {
      events: this.events,
      log: this.log.child(rec.id),
      vm: r.vm,
    });
    this.running.set(rec.id, { vm: r.vm, served, ...(r.net ? { net: r.net } : {}) });
    const reaped = await served.proxy.reapOrphans();
    if (reaped.length) {
      this.log.info(
        `sandbox ${rec.id}: stopped ${reaped.length} container(s) containerd recorded as exited when the daemon went away: ${reaped.join(", ")}`,
      );
    }
    return { ok: true };
  }

  discard(dir: string): Promise<void> {
    return discardDir(dir, this.log);
  }

  /** Daemon shutdown: stop serving but leave every VM running (KillMode=process). */
  async detachAll(): Promise<void> {
    for (const r of this.running.values()) {
      await r.served.close();
      r.vm.detach();
    }
    this.running.clear();
  }
}
