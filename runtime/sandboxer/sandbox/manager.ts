import { chmod, mkdir } from "node:fs/promises";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import type { CgroupStats } from "../../cgroups/stats.ts";
import { validateId } from "../../contract/ids.ts";
import { GrpcError } from "../../grpc/service.ts";
import type { Logger } from "../../log/log.ts";
import { type LifecycleMetrics, NO_METRICS } from "../metrics/observer.ts";
import { isRunning } from "../metrics/process-stats.ts";
import { removeTree } from "../storage/remove.ts";
import { unmountAllUnder } from "../storage/share.ts";
import { readRecords, writeRecord } from "../store.ts";
import { KeyedLock } from "./keyed-lock.ts";
import type { PodResources } from "./pod-cgroup.ts";
import type { ExitInfo, Launcher, SandboxRecord } from "./record.ts";

interface Live {
  rec: SandboxRecord;
  exited: Promise<ExitInfo>;
  resolveExit: (e: ExitInfo) => void;
}

export interface CreateParams {
  id: string;
  netnsPath: string;
  podConfig?: unknown;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

/**
 * Owns every sandbox's lifecycle and persisted state. Operations on one id are serialised; different ids run
 * concurrently. The VM machinery sits behind Launcher so the state machine is testable on its own.
 */
export class SandboxManager {
  private live = new Map<string, Live>();
  private lock = new KeyedLock();

  constructor(
    readonly root: string,
    private readonly launcher: Launcher,
    private readonly log: Logger,
    private readonly metrics: LifecycleMetrics = NO_METRICS,
  ) {}

  /** A sandbox's lines carry its id as a field, to filter and index by. */
  private logOf(id: string): Logger {
    return this.log.with({ sandbox: id });
  }

  dirOf(id: string): string {
    return path.join(this.root, id);
  }

  private get(id: string): Live {
    const problem = validateId("sandbox", id);
    if (problem) throw new GrpcError(status.INVALID_ARGUMENT, problem);
    const l = this.live.get(id);
    if (!l) throw new GrpcError(status.NOT_FOUND, `sandbox ${id} not found`);
    return l;
  }

  private track(rec: SandboxRecord): Live {
    let resolveExit!: (e: ExitInfo) => void;
    const exited = new Promise<ExitInfo>((r) => {
      resolveExit = r;
    });
    const l: Live = { rec, exited, resolveExit };
    if (rec.state === "stopped") resolveExit(exitOf(rec));
    this.live.set(rec.id, l);
    return l;
  }

  private async persist(l: Live): Promise<void> {
    await writeRecord(this.dirOf(l.rec.id), l.rec);
  }

  async create(p: CreateParams): Promise<void> {
    const problem = validateId("sandbox", p.id);
    if (problem) throw new GrpcError(status.INVALID_ARGUMENT, problem);
    await this.lock.run(p.id, async () => {
      if (this.live.has(p.id)) throw new GrpcError(status.ALREADY_EXISTS, `sandbox ${p.id} already exists`);
      const dir = this.dirOf(p.id);
      const rec: SandboxRecord = {
        id: p.id,
        state: "created",
        createdAt: new Date().toISOString(),
        netnsPath: p.netnsPath,
        podConfig: p.podConfig,
        annotations: p.annotations,
        labels: p.labels,
        nextStorage: 0,
      };
      try {
        // 0700: the hybrid vsock sockets in it lead to the guest agent; only root may reach them.
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await this.launcher.prepare(rec, dir);
        await writeRecord(dir, rec);
      } catch (err) {
        await removeTree(dir).catch((e: Error) => this.log.warn(e.message));
        throw new GrpcError(status.INTERNAL, `create sandbox ${p.id}: ${(err as Error).message}`);
      }
      this.track(rec);
      this.logOf(p.id).info(`sandbox ${p.id} created`);
    });
  }

  /**
   * Boots a created sandbox. When `signal` aborts (containerd's RunPodSandbox was cancelled or timed out), containerd
   * forgets the pod, so the VM is stopped and the sandbox removed as Shutdown would: nothing is left to leak, and a
   * new Create of the same id starts afresh.
   */
  async start(id: string, signal?: AbortSignal): Promise<SandboxRecord> {
    const t0 = performance.now();
    const started = await this.lock.run(id, async () => {
      const l = this.get(id);
      if (l.rec.state !== "created") {
        throw new GrpcError(status.FAILED_PRECONDITION, `sandbox ${id} is ${l.rec.state}, not created`);
      }
      const dir = this.dirOf(id);
      const release = () =>
        this.launcher.release(l.rec, dir).catch((e: Error) => this.logOf(id).warn(`release ${id}: ${e.message}`));
      let running: SandboxRecord;
      try {
        const started = await this.launcher.start(l.rec, dir, signal);
        running = { ...l.rec, ...started, state: "running", startedAt: new Date().toISOString() };
      } catch (err) {
        await release();
        if (signal?.aborted) return undefined;
        throw new GrpcError(status.INTERNAL, `start sandbox ${id}: ${(err as Error).message}`);
      }
      if (signal?.aborted) {
        // Booted, but nobody will hear of it.
        await this.launcher.stop(running, dir, 0).catch((e: Error) => this.logOf(id).warn(`stop ${id}: ${e.message}`));
        await release();
        return undefined;
      }
      try {
        await writeRecord(dir, running);
      } catch (err) {
        // A VM sandbox.json does not record would be lost to the next restart (a full disk): stop it instead.
        await this.launcher.stop(running, dir, 0).catch((e: Error) => this.logOf(id).warn(`stop ${id}: ${e.message}`));
        await release();
        throw new GrpcError(status.INTERNAL, `start sandbox ${id}: ${(err as Error).message}`);
      }
      Object.assign(l.rec, running);
      this.watch(l);
      this.logOf(id).info(`sandbox ${id} running (vmm pid ${l.rec.pid})`, { vmm_pid: l.rec.pid });
      return l.rec;
    });
    if (started) {
      this.metrics.startPhase("total", performance.now() - t0);
      return started;
    }
    await this.forget(id, "its Start was cancelled by the caller");
    throw new GrpcError(status.CANCELLED, `start sandbox ${id}: cancelled by the caller; the sandbox was removed`);
  }

  /** Removes a sandbox whose VM is gone, as Shutdown does; why is logged. */
  private async forget(id: string, why: string): Promise<void> {
    await this.lock.run(id, async () => {
      const l = this.live.get(id);
      if (!l) return;
      l.rec.state = "stopped";
      l.resolveExit(exitOf(l.rec));
      await unmountAllUnder(this.dirOf(id)).catch((e: Error) => this.log.warn(e.message));
      await removeTree(this.dirOf(id)).catch((e: Error) => this.log.error(`${this.dirOf(id)} is left: ${e.message}`));
      this.live.delete(id);
      this.logOf(id).info(`sandbox ${id} removed: ${why}`);
    });
  }

  /** Follows a running VM until it exits, then records the exit and releases host resources. */
  private watch(l: Live): void {
    const dir = this.dirOf(l.rec.id);
    this.launcher.waitExit(l.rec, dir).then(
      (exit) => this.onExit(l, exit),
      (err: Error) => this.onExit(l, { exitStatus: 255, exitedAt: new Date() }, err.message),
    );
  }

  private async onExit(l: Live, exit: ExitInfo, why?: string): Promise<void> {
    await this.lock.run(l.rec.id, async () => {
      if (l.rec.state === "stopped") return;
      l.rec.state = "stopped";
      l.rec.exitStatus = exit.exitStatus;
      l.rec.exitedAt = exit.exitedAt.toISOString();
      this.logOf(l.rec.id).info(`sandbox ${l.rec.id} exited with status ${exit.exitStatus}${why ? ` (${why})` : ""}`, {
        exit_status: exit.exitStatus,
      });
      await this.launcher
        .release(l.rec, this.dirOf(l.rec.id))
        .catch((e: Error) => this.logOf(l.rec.id).warn(`release ${l.rec.id}: ${e.message}`));
      if (this.live.get(l.rec.id) === l) {
        await this.persist(l).catch((e: Error) => this.logOf(l.rec.id).error(`persist ${l.rec.id}: ${e.message}`));
      }
      l.resolveExit(exit);
    });
  }

  async stop(id: string, timeoutMs: number, only?: Live): Promise<void> {
    const t0 = performance.now();
    let wasRunning = false;
    const l = await this.lock.run(id, async () => {
      const l = this.get(id);
      if (only && l !== only) return undefined;
      if (l.rec.state === "created") {
        // On disk first, so a failed write (a full disk) leaves Status and sandbox.json agreeing.
        const stopped: SandboxRecord = {
          ...l.rec,
          state: "stopped",
          exitStatus: 0,
          exitedAt: new Date().toISOString(),
        };
        await writeRecord(this.dirOf(id), stopped);
        Object.assign(l.rec, stopped);
        l.resolveExit(exitOf(l.rec));
      } else if (l.rec.state === "running") {
        wasRunning = true;
        await this.launcher.stop(l.rec, this.dirOf(id), timeoutMs);
      }
      return l;
    });
    if (l) await l.exited;
    if (wasRunning) this.metrics.stopped(performance.now() - t0);
  }

  wait(id: string): Promise<ExitInfo> {
    return this.get(id).exited;
  }

  status(id: string): SandboxRecord {
    return this.get(id).rec;
  }

  /** Host-side usage of a running sandbox (its pod cgroup); undefined when it has no pod cgroup. */
  async stats(id: string): Promise<CgroupStats | undefined> {
    const l = this.get(id);
    if (l.rec.state !== "running") throw notRunning(l.rec);
    return this.launcher.stats(l.rec);
  }

  /** Applies pod resources to a running sandbox. */
  async update(id: string, resources: PodResources): Promise<void> {
    await this.lock.run(id, async () => {
      const l = this.get(id);
      if (l.rec.state !== "running") throw notRunning(l.rec);
      try {
        await this.launcher.update(l.rec, resources);
      } catch (err) {
        throw new GrpcError(status.FAILED_PRECONDITION, `update sandbox ${id}: ${(err as Error).message}`);
      }
    });
  }

  list(): SandboxRecord[] {
    return [...this.live.values()].map((l) => l.rec);
  }

  async shutdown(id: string): Promise<void> {
    const target = this.get(id);
    await this.stop(id, 0, target).catch((err: unknown) => {
      // Gone meanwhile (a concurrent Shutdown): nothing left to stop.
      if (this.live.has(id)) throw err;
    });
    await this.lock.run(id, async () => {
      // Only the sandbox this call was about: a concurrent Shutdown may have removed it and a Create reused the id.
      const l = this.live.get(id);
      if (l !== target) return;
      // Never descends into a mount: a volume still mounted under the directory keeps the sandbox (and its data).
      try {
        await unmountAllUnder(this.dirOf(id));
        await removeTree(this.dirOf(id));
      } catch (err) {
        throw new GrpcError(status.INTERNAL, `shutdown sandbox ${id}: ${(err as Error).message}`);
      }
      this.live.delete(id);
      this.logOf(id).info(`sandbox ${id} removed`);
    });
  }

  /** Reloads every sandbox under root; running VMs are reattached, the rest released and kept as stopped. */
  async recover(): Promise<{ recovered: string[]; cleaned: string[] }> {
    const result = { recovered: [] as string[], cleaned: [] as string[] };
    const loaded = await readRecords<SandboxRecord>(this.root);
    await Promise.all(
      loaded.map(async (entry) => {
        if (!entry.record) {
          this.log.warn(`cannot recover ${entry.dir}: ${entry.error}; stopping what it runs and removing it`);
          try {
            await this.launcher.discard(entry.dir);
            await removeTree(entry.dir);
          } catch (err) {
            this.log.error(`${entry.dir} is left in place: ${(err as Error).message}`);
          }
          // Nothing readable says a VM ran: whatever discard stopped, the sandbox is lost.
          this.metrics.recovery("lost");
          result.cleaned.push(entry.id);
          return;
        }
        const rec = entry.record;
        await chmod(entry.dir, 0o700).catch(() => undefined);
        if (rec.state !== "running") {
          this.track(rec);
          result.recovered.push(rec.id);
          return;
        }
        // Asked before recovering, which stops a VM it cannot keep: lost or killed.
        const vmmRan = rec.pid !== undefined && (await isRunning(rec.pid));
        const r = await this.launcher
          .recover(rec, entry.dir)
          .catch((e: Error) => ({ ok: false as const, reason: e.message }));
        const l = this.track(rec);
        if (r.ok) {
          this.watch(l);
          this.metrics.recovery("recovered");
          result.recovered.push(rec.id);
          this.logOf(rec.id).info(`sandbox ${rec.id} recovered (vmm pid ${rec.pid})`, { vmm_pid: rec.pid });
        } else {
          this.logOf(rec.id).warn(`sandbox ${rec.id} cannot be recovered (${r.reason}); cleaning it up`);
          await this.onExit(l, { exitStatus: 255, exitedAt: new Date() }, r.reason);
          this.metrics.recovery(vmmRan ? "killed" : "lost");
          result.cleaned.push(rec.id);
        }
      }),
    );
    return result;
  }
}

function exitOf(rec: SandboxRecord): ExitInfo {
  return { exitStatus: rec.exitStatus ?? 0, exitedAt: rec.exitedAt ? new Date(rec.exitedAt) : new Date() };
}

function notRunning(rec: SandboxRecord): GrpcError {
  return new GrpcError(status.FAILED_PRECONDITION, `sandbox ${rec.id} is ${rec.state}, not running`);
}
