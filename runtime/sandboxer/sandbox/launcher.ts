import path from "node:path";
import type { CgroupStats } from "../../cgroups/stats.ts";
import type { Logger } from "../../log/log.ts";
import { Task } from "../../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import type { TtrpcClient } from "../../ttrpc/index.ts";
import type { Config } from "../config/schema.ts";
import type { EventPublisher } from "../events.ts";
import type { Hypervisor } from "../hypervisor/vm-api.ts";
import { type LifecycleMetrics, NO_METRICS } from "../metrics/observer.ts";
import { boot } from "./boot.ts";
import { followGuestConsole, type GuestLog } from "./guest-log.ts";
import type { PodResources } from "./pod-cgroup.ts";
import { reattach } from "./reattach.ts";
import type { ExitInfo, Launcher, SandboxRecord } from "./record.ts";
import {
  containerRecords,
  discardDir,
  type PodTaps,
  podCgroupOf,
  podConfigOf,
  prepareShare,
  releaseHost,
  taskSocketOf,
  unwind,
} from "./resources.ts";
import type { RuntimeState } from "./runtime-state.ts";
import { type Served, serve } from "./serve.ts";
import { VmResizer } from "./vm-resize.ts";
import { podDemand } from "./vm-size.ts";

/** A sandbox this daemon serves: its VM, its task API and the taps it attached. */
interface Running {
  vm: Hypervisor;
  served: Served;
  resizer: VmResizer;
  guestLog: GuestLog;
  net?: PodTaps;
}

/** Runs each sandbox as a VM: hypervisor + pod network + guest agent + the per-sandbox task API for containerd. */
export class VmLauncher implements Launcher {
  private running = new Map<string, Running>();

  constructor(
    private readonly config: Config,
    private readonly events: EventPublisher,
    private readonly log: Logger,
    private readonly metrics: LifecycleMetrics = NO_METRICS,
  ) {}

  prepare(rec: SandboxRecord, dir: string): Promise<void> {
    return prepareShare(rec, dir);
  }

  /** One sandbox's lines: target `<target>::<id>` as before, and the `sandbox` field to filter and index by. */
  private logOf(id: string): Logger {
    return this.log.child(id).with({ sandbox: id });
  }

  async start(
    rec: SandboxRecord,
    dir: string,
    signal?: AbortSignal,
  ): Promise<{ pid: number; taskAddress: string; runtime: RuntimeState }> {
    const log = this.logOf(rec.id);
    const t0 = Date.now();
    try {
      const started = await this.launch(rec, dir, log, signal);
      log.info(`started in ${((Date.now() - t0) / 1000).toFixed(1)} s`, {
        vmm_pid: started.pid,
        duration_ms: Date.now() - t0,
      });
      return started;
    } catch (err) {
      // containerd gets the error too; here it reaches the journal at a priority `journalctl -p` filters on.
      const fields = { duration_ms: Date.now() - t0 };
      if (signal?.aborted) log.warn(`start cancelled by the caller: ${(err as Error).message}`, fields);
      else log.error(`start failed: ${(err as Error).message}`, fields);
      throw err;
    }
  }

  private async launch(
    rec: SandboxRecord,
    dir: string,
    log: Logger,
    signal?: AbortSignal,
  ): Promise<{ pid: number; taskAddress: string; runtime: RuntimeState }> {
    const booted = await boot(rec, dir, this.config, log, signal, this.metrics);
    const resizer = this.resizerFor(rec, booted.vm, booted.agent, log);
    let served: Served;
    try {
      served = await serve(rec, dir, booted.agent, booted.net, {
        events: this.events,
        log,
        vm: booted.vm,
        resizer,
        clockSet: booted.clockSet,
      });
    } catch (err) {
      booted.agent.close();
      await unwind(booted, log);
      throw err;
    }
    this.running.set(rec.id, {
      vm: booted.vm,
      served,
      resizer,
      guestLog: booted.guestLog,
      ...(booted.net ? { net: booted.net } : {}),
    });
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
      .catch((e: Error) => this.logOf(rec.id).debug(`agent shutdown: ${e.message}`));
    await r.vm.stop(timeoutMs);
  }

  async release(rec: SandboxRecord, dir: string): Promise<void> {
    const r = this.running.get(rec.id);
    this.running.delete(rec.id);
    if (r) {
      await r.served.close();
      await r.served.proxy.releaseAll();
      await r.vm.cleanup();
      // After the console's last output (a guest panic) was saved.
      await r.guestLog.stop();
    } else {
      // Not served by this daemon (a failed start or recovery): the records still say what is mounted.
      await containerRecords(dir, this.logOf(rec.id)).releaseAll();
    }
    // Its events still waiting for containerd (only while containerd is unreachable) go with it.
    this.events.forget(rec.id);
    await releaseHost(rec, dir, r?.net);
  }

  /** The pod cgroup's numbers (the VMM and its helpers), for Controller.Metrics. */
  async stats(rec: SandboxRecord): Promise<CgroupStats | undefined> {
    return podCgroupOf(rec)?.stats();
  }

  /** Pod resources (CPU, memory limits): the VM grows to them, and the pod cgroup (if any) is bounded by them. */
  async update(rec: SandboxRecord, resources: PodResources): Promise<void> {
    const r = this.running.get(rec.id);
    const cgroup = podCgroupOf(rec);
    if (!r && !cgroup) {
      throw new Error(
        `sandbox ${rec.id} has no VM served here and no pod cgroup (its PodSandboxConfig has no cgroup_parent)`,
      );
    }
    await r?.resizer.setPod(resources);
    await cgroup?.update(resources);
  }

  /** The resizer of a sandbox's VM, starting from the configured size and the pod's limits it booted with. */
  private resizerFor(rec: SandboxRecord, vm: Hypervisor, agent: TtrpcClient, log: Logger): VmResizer {
    const h = this.config.hypervisor;
    return new VmResizer({
      vm,
      agent: () => agent,
      base: { vcpus: h.vcpus, memoryMiB: h.memory_in_mb, maxVcpus: h.default_max_vcpus },
      pod: podDemand(podConfigOf(rec)?.linux?.resources),
      log,
    });
  }

  async recover(rec: SandboxRecord, dir: string): Promise<{ ok: true } | { ok: false; reason: string }> {
    const log = this.logOf(rec.id);
    const r = await reattach(rec, dir, log, this.metrics);
    if (!r.ok) return r;
    // Containers' limits recorded before the restart are not known again; the VM keeps the size it has.
    const resizer = this.resizerFor(rec, r.vm, r.agent, log);
    const served = await serve(rec, dir, r.agent, r.net, { events: this.events, log, vm: r.vm, resizer });
    // From where the console log ends: what an earlier daemon forwarded is not forwarded again.
    const guestLog = await followGuestConsole(dir, rec.id);
    this.running.set(rec.id, { vm: r.vm, served, resizer, guestLog, ...(r.net ? { net: r.net } : {}) });
    const reaped = await served.proxy.reapOrphans();
    if (reaped.length) {
      log.info(
        `sandbox ${rec.id}: stopped ${reaped.length} container(s) containerd recorded as exited when the daemon went away: ${reaped.join(", ")}`,
        { containers: reaped.join(",") },
      );
    }
    return { ok: true };
  }

  discard(dir: string): Promise<void> {
    return discardDir(dir, this.log.with({ sandbox: path.basename(dir) }));
  }

  /** Daemon shutdown: stop serving but leave every VM running (KillMode=process). */
  async detachAll(): Promise<void> {
    for (const r of this.running.values()) {
      await r.served.close();
      r.vm.detach();
      await r.guestLog.stop();
    }
    this.running.clear();
  }
}
