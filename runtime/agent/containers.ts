import { EventEmitter } from "node:events";
import { rm } from "node:fs/promises";
import path from "node:path";
import type { CgroupStats } from "../cgroups/stats.ts";
import type { GuestDisk } from "../contract/block.ts";
import type { OciProcess, OciSpec } from "../contract/oci.ts";
import { type Fields, type Logger, logger } from "../log/log.ts";
import type { DiskLookup } from "./block-devices.ts";
import { prepareContainerDir, removeContainerDir } from "./container-bundle.ts";
import { ContainerCgroups } from "./container-cgroups.ts";
import { type Container, ContainerRegistry, processOf, statusOf } from "./container-registry.ts";
import { asTaskError, TaskError } from "./errors.ts";
import { checkExecSpec, writeExecProcess } from "./exec-process.ts";
import { KeyedSerial } from "./keyed-serial.ts";
import type { OomEvent } from "./oom.ts";
import type { Exit, ExitSource, IoOptions, TaskProcess, TaskStatus } from "./process.ts";
import { Proc } from "./process.ts";
import { launchProcess, type RuncLaunch } from "./process-launch.ts";
import { type Runc, RuncError } from "./runc.ts";
import { adjustResources, type GuestLsm, guestHasSwap, guestLsm, prepareBundle } from "./spec.ts";

export interface ContainerManagerOptions {
  runc: Runc;
  exits: ExitSource;
  /** The agent's own files per container (pid files, exec process specs, console sockets). */
  stateDir: string;
  /** runc create --no-pivot, for a guest whose root is an initramfs. */
  noPivot?: boolean;
  /** How long to wait for runc's pty master after runc succeeded; default 5 s. */
  consoleTimeoutMs?: number;
  /** OOM counter polling interval where inotify cannot be used (cgroup v1); default 1 s. */
  oomPollMs?: number;
  /** Default: probed from the running kernel. */
  lsm?: GuestLsm;
  /** Writes the runc bundle in target from the host's bundle; default: the spec adjusted for the guest (spec.ts). */
  prepareBundle?: (source: string, target: string) => Promise<OciSpec>;
  /** Where hot-plugged disks are looked up; default the guest's sysfs and /dev. */
  diskLookup?: DiskLookup;
  log?: Logger;
}

export interface ProcessState {
  id: string;
  execId: string;
  bundle: string;
  pid: number;
  status: TaskStatus;
  exitStatus: number;
  exitedAt: Date | undefined;
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
}

export interface DeleteResult {
  pid: number;
  exitStatus: number;
  exitedAt: Date | undefined;
}

export interface ExitEvent {
  containerId: string;
  execId: string;
  pid: number;
  exitStatus: number;
  exitedAt: Date;
}

export interface StartEvent {
  containerId: string;
  execId: string;
  pid: number;
}

export interface ProcessInfo {
  pid: number;
  /** Set when the pid is an exec process the agent started. */
  execId?: string;
}

/** How long delete() waits for the exit of an init that runc delete --force killed. */
const KILLED_EXIT_WAIT_MS = 10_000;

/**
 * The containers of the pod and their processes, run with runc. Emits 'start' (StartEvent) when a process
 * started, 'exit' (ExitEvent) when a started process exits and 'oom' (OomEvent) when a container's memory cgroup
 * OOM-kills; errors are TaskErrors.
 */
export class ContainerManager extends EventEmitter<{ start: [StartEvent]; exit: [ExitEvent]; oom: [OomEvent] }> {
  readonly #runc: Runc;
  readonly #exits: ExitSource;
  readonly #stateDir: string;
  readonly #noPivot: boolean;
  readonly #consoleTimeoutMs: number;
  readonly #lsm: GuestLsm;
  readonly #prepareBundle: (source: string, target: string) => Promise<OciSpec>;
  readonly #diskLookup: DiskLookup | undefined;
  readonly #log: Logger;
  readonly #cgroups: ContainerCgroups;
  readonly #registry = new ContainerRegistry();
  /** One state-changing operation per container at a time (runc itself is not safe to race). */
  readonly #serial = new KeyedSerial();
  /** Processes being started: their exit is announced only after their start. */
  readonly #starting = new WeakMap<object, Promise<void>>();
  #seq = 0;

  constructor(opts: ContainerManagerOptions) {
    super();
    this.#runc = opts.runc;
    this.#exits = opts.exits;
    this.#stateDir = opts.stateDir;
    this.#noPivot = opts.noPivot ?? false;
    this.#consoleTimeoutMs = opts.consoleTimeoutMs ?? 5_000;
    this.#lsm = opts.lsm ?? guestLsm();
    this.#prepareBundle = opts.prepareBundle ?? ((source, target) => prepareBundle(source, target, { lsm: this.#lsm }));
    this.#diskLookup = opts.diskLookup;
    this.#log = opts.log ?? logger("vmm_task::containers");
    this.#cgroups = new ContainerCgroups({ oomPollMs: opts.oomPollMs ?? 1000, log: this.#log });
    this.#cgroups.on("oom", (ev) => {
      this.#log.info(`container ${ev.containerId}: OOM kill`, { container: ev.containerId });
      this.emit("oom", ev);
    });
  }

  /** Ids of the containers the manager holds. */
  list(): string[] {
    return this.#registry.ids();
  }

  /**
   * runc create: the init process exists (stdio ready) but waits for start(). Returns its pid. `disks` are the ones
   * the host hot-plugged for it (its rootfs, raw block devices).
   */
  async create(id: string, bundle: string, io: IoOptions = {}, disks: GuestDisk[] = []): Promise<number> {
    this.#registry.reserve(id);
    try {
      const dir = await prepareContainerDir({
        stateDir: this.#stateDir,
        id,
        bundle,
        terminal: Boolean(io.terminal),
        prepareBundle: this.#prepareBundle,
        disks,
        ...(this.#diskLookup ? { diskLookup: this.#diskLookup } : {}),
      });
      const init = new Proc(id, "", io);
      const c: Container = { id, bundle, dir, init, execs: new Map(), paused: false, deleted: false };
      try {
        await this.#launch(c, init, (run) =>
          this.#runc.create(id, {
            bundle: dir,
            pidFile: run.pidFile,
            noPivot: this.#noPivot,
            ...(run.consoleSocket ? { consoleSocket: run.consoleSocket } : {}),
            ...(run.stdio ? { stdio: run.stdio } : {}),
          }),
        );
      } catch (e) {
        init.closeStdio();
        await this.#runc.delete(id, { force: true }).catch(() => undefined);
        await removeContainerDir(dir);
        throw asTaskError(e, `container ${id}: create`);
      }
      await this.#cgroups.track(id, init.pid);
      this.#registry.add(c);
      this.#log.debug(`container ${id}: created, pid ${init.pid}`, fieldsOf(init));
      return init.pid;
    } finally {
      this.#registry.release(id);
    }
  }

  /** Starts the init (runc start) or a registered exec (runc exec --detach). Returns the pid. */
  async start(id: string, execId = ""): Promise<number> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      const p = processOf(c, execId);
      if (p.phase !== "created") {
        throw new TaskError("FailedPrecondition", `${p.label} cannot be started: it is ${statusOf(c, p)}`);
      }
      let started = () => {};
      this.#starting.set(p, new Promise<void>((r) => (started = r)));
      try {
        const pid = p === c.init ? await this.#startInit(c) : await this.#startExec(c, p);
        this.#log.debug(`${p.label}: started, pid ${pid}`, fieldsOf(p));
        this.emit("start", { containerId: id, execId, pid });
        return pid;
      } finally {
        this.#starting.delete(p);
        started();
      }
    });
  }

  async #startInit(c: Container): Promise<number> {
    try {
      await this.#runc.start(c.id);
    } catch (e) {
      throw asTaskError(e, `container ${c.id}: start`);
    }
    if (!c.init.exit) c.init.phase = "running";
    return c.init.pid;
  }

  async #startExec(c: Container, p: Proc): Promise<number> {
    if (c.init.exit) throw new TaskError("FailedPrecondition", `${p.label} cannot start: the container has exited`);
    p.phase = "starting";
    const processFile = path.join(c.dir, `exec-${++this.#seq}.json`);
    try {
      await writeExecProcess(processFile, p, this.#lsm);
      await this.#launch(c, p, (run) =>
        this.#runc.exec(c.id, {
          processFile,
          pidFile: run.pidFile,
          ...(run.consoleSocket ? { consoleSocket: run.consoleSocket } : {}),
          ...(run.stdio ? { stdio: run.stdio } : {}),
        }),
      );
    } catch (e) {
      p.closeStdio();
      // A failed start is final: Wait returns and Delete is allowed, as with containerd's shim.
      p.setExited({ exitStatus: 255, exitedAt: new Date() });
      throw asTaskError(e, `${p.label}: start`);
    } finally {
      await rm(processFile, { force: true });
    }
    // A quick process may have exited (and been recorded) before runc returned.
    if (!p.exit) p.phase = "running";
    return p.pid;
  }

  /** Registers an exec process (containerd Exec); start(id, execId) runs it. */
  async exec(id: string, execId: string, spec: OciProcess, io: IoOptions = {}): Promise<void> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      if (!execId) throw new TaskError("InvalidArgument", `container ${id}: an exec needs a non-empty exec id`);
      if (c.execs.has(execId)) throw new TaskError("AlreadyExists", `exec ${execId} of container ${id} already exists`);
      if (c.init.exit) throw new TaskError("FailedPrecondition", `container ${id} has exited; cannot exec ${execId}`);
      checkExecSpec(id, execId, spec, io);
      c.execs.set(execId, new Proc(id, execId, io, spec));
    });
  }

  /**
   * Signals the init (through runc; all=true signals every process in the container) or an exec. A process
   * that already exited is NotFound, as containerd expects.
   */
  async kill(id: string, execId: string | undefined, signal: number, all = false): Promise<void> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      const p = processOf(c, execId ?? "");
      if (p === c.init) {
        if (p.exit && !all) throw new TaskError("NotFound", `${p.label}: process already finished`);
        try {
          await this.#runc.kill(id, signal, { all });
        } catch (e) {
          if (e instanceof RuncError && (e.notRunning || e.notExist)) {
            throw new TaskError("NotFound", `${p.label}: process already finished`);
          }
          throw asTaskError(e, `${p.label}: kill`);
        }
        return;
      }
      if (p.exit) throw new TaskError("NotFound", `${p.label}: process already finished`);
      if (!p.pid) throw new TaskError("FailedPrecondition", `${p.label} has not been started`);
      try {
        process.kill(p.pid, signal);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ESRCH") {
          throw new TaskError("NotFound", `${p.label}: process already finished`);
        }
        throw new TaskError("Internal", `${p.label}: kill ${signal}: ${(e as Error).message}`);
      }
    });
  }

  /** Resolves with the exit of the process, however many callers wait and whether it already exited. */
  wait(id: string, execId = ""): Promise<Exit> {
    try {
      return processOf(this.#registry.get(id), execId).exited;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Removes an exited (or never started) process. Deleting the init removes the container (runc delete
   * --force also kills leftovers in its cgroup) and releases its pipes, pty, pid files and OOM watch.
   */
  async delete(id: string, execId = ""): Promise<DeleteResult> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      const p = processOf(c, execId);
      if (p !== c.init) {
        if (!p.exit && (p.phase === "running" || p.phase === "starting")) {
          throw new TaskError("FailedPrecondition", `${p.label} is still running; kill it and wait for it first`);
        }
        c.execs.delete(execId);
        p.closeStdio();
        p.abandon("deleted before it was started");
        return result(p);
      }
      if (p.phase !== "created" && !p.exit) {
        throw new TaskError("FailedPrecondition", `container ${id} is still running; kill it and wait for it first`);
      }
      try {
        await this.#runc.delete(id, { force: true });
      } catch (e) {
        if (!(e instanceof RuncError && e.notExist)) throw asTaskError(e, `container ${id}: delete`);
      }
      if (!p.exit) await this.#awaitKilled(p);
      c.deleted = true;
      this.#registry.remove(id);
      await this.#cgroups.untrack(id);
      for (const e of c.execs.values()) {
        e.closeStdio();
        if (e.phase === "created") e.abandon("its container was deleted before it was started");
      }
      p.closeStdio();
      await removeContainerDir(c.dir);
      this.#log.debug(`container ${id}: deleted`, { container: id });
      return result(p);
    });
  }

  state(id: string, execId = ""): ProcessState {
    const c = this.#registry.get(id);
    const p = processOf(c, execId);
    return {
      id,
      execId,
      bundle: c.bundle,
      pid: p.pid,
      status: statusOf(c, p),
      exitStatus: p.exit?.exitStatus ?? 0,
      exitedAt: p.exit?.exitedAt,
      terminal: p.terminal,
      stdin: p.io.stdin,
      stdout: p.io.stdout,
      stderr: p.io.stderr,
    };
  }

  /** The process with its stdio streams (see TaskProcess). */
  process(id: string, execId = ""): TaskProcess {
    return processOf(this.#registry.get(id), execId);
  }

  /** Every pid in the container's cgroup, execs labelled. Empty once everything exited. */
  async pids(id: string): Promise<ProcessInfo[]> {
    const c = this.#registry.get(id);
    let pids: number[];
    try {
      pids = await this.#runc.ps(id);
    } catch (e) {
      if (c.init.exit) return [];
      throw asTaskError(e, `container ${id}: pids`);
    }
    const byPid = new Map<number, string>();
    for (const e of c.execs.values()) if (e.pid && !e.exit) byPid.set(e.pid, e.execId);
    return pids.map((pid) => {
      const execId = byPid.get(pid);
      return execId === undefined ? { pid } : { pid, execId };
    });
  }

  async pause(id: string): Promise<void> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      if (statusOf(c, c.init) !== "RUNNING") {
        throw new TaskError("FailedPrecondition", `container ${id} cannot be paused: it is ${statusOf(c, c.init)}`);
      }
      try {
        await this.#runc.pause(id);
      } catch (e) {
        throw asTaskError(e, `container ${id}: pause`);
      }
      c.paused = true;
    });
  }

  async resume(id: string): Promise<void> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      if (!c.paused) throw new TaskError("FailedPrecondition", `container ${id} is not paused`);
      try {
        await this.#runc.resume(id);
      } catch (e) {
        throw asTaskError(e, `container ${id}: resume`);
      }
      c.paused = false;
    });
  }

  /** Applies an OCI LinuxResources object (runc update). */
  async update(id: string, resources: object): Promise<void> {
    return this.#serial.run(id, async () => {
      const c = this.#registry.get(id);
      if (c.init.exit) throw new TaskError("FailedPrecondition", `container ${id} has exited; nothing to update`);
      try {
        await this.#runc.update(id, adjustResources(resources, guestHasSwap()));
      } catch (e) {
        throw asTaskError(e, `container ${id}: update`);
      }
    });
  }

  /** Raw numbers from the container's cgroup (v1 or v2, see runtime/cgroups/stats.ts). */
  async stats(id: string): Promise<CgroupStats> {
    this.#registry.get(id); // an unknown container is NotFound, not a missing cgroup
    return this.#cgroups.stats(id);
  }

  /** Closes the process's stdin so it reads EOF. A terminal stays open (as with containerd's shim). */
  closeIO(id: string, execId = ""): void {
    processOf(this.#registry.get(id), execId).closeStdin();
  }

  /** Resizes the process's terminal; a no-op without one (as with containerd's shim). */
  resizePty(id: string, execId: string | undefined, width: number, height: number): void {
    const p = processOf(this.#registry.get(id), execId ?? "");
    if (!p.terminal) return;
    if (p.pty) {
      try {
        p.pty.resize(width, height);
      } catch (e) {
        throw new TaskError("Internal", `${p.label}: resize to ${width}x${height}: ${(e as Error).message}`);
      }
    } else p.pendingSize = { cols: width, rows: height };
  }

  /** Kills and deletes every container (agent shutdown). */
  async shutdown(): Promise<void> {
    await Promise.all(
      this.list().map(async (id) => {
        // A frozen cgroup holds SIGKILL until thawed.
        if (this.#registry.find(id)?.paused) await this.resume(id).catch(() => undefined);
        await this.kill(id, "", 9, true).catch(() => undefined);
        const c = this.#registry.find(id);
        if (c && !c.init.exit) await this.#awaitKilled(c.init);
        await this.delete(id).catch((e: Error) => this.#log.warn(`shutdown: ${e.message}`, { container: id }));
      }),
    );
    this.#cgroups.close();
  }

  /** Runs runc (create or exec) for p with its stdio (see launchProcess); records its pid and, later, its exit. */
  async #launch(c: Container, p: Proc, run: (r: RuncLaunch) => Promise<void>): Promise<void> {
    const seq = ++this.#seq;
    const mark = this.#exits.mark();
    p.pid = await launchProcess(p, run, {
      pidFile: path.join(c.dir, `${seq}.pid`),
      // Flat and short: unix socket paths are limited to 107 bytes.
      consoleSocket: path.join(this.#stateDir, `console-${seq}.sock`),
      consoleTimeoutMs: this.#consoleTimeoutMs,
    });
    this.#exits.waitExit(p.pid, { after: mark }).then(
      (exit) => void this.#onExit(c, p, exit),
      (err: Error) => {
        this.#log.error(`${p.label}: its exit status cannot be known: ${err.message}`, fieldsOf(p));
        p.abandon(`its exit status cannot be known: ${err.message}`);
      },
    );
  }

  async #onExit(c: Container, p: Proc, exit: Exit): Promise<void> {
    // An OOM kill must be reported before the exit it caused, so containerd records the reason.
    if (p === c.init) await this.#cgroups.checkOom(c.id);
    p.setExited(exit);
    this.#log.debug(`${p.label}: pid ${p.pid} exited with status ${exit.exitStatus}`, {
      ...fieldsOf(p),
      exit_status: exit.exitStatus,
    });
    if (c.deleted) return;
    const starting = this.#starting.get(p);
    if (starting) await starting;
    this.emit("exit", { containerId: c.id, execId: p.execId, pid: p.pid, ...exit });
  }

  async #awaitKilled(p: Proc): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), KILLED_EXIT_WAIT_MS);
    });
    const outcome = await Promise.race([
      p.exited.then(
        () => "exited" as const,
        () => "gone" as const,
      ),
      timeout,
    ]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.#log.warn(
        `${p.label}: no exit reported ${KILLED_EXIT_WAIT_MS} ms after it was killed; assuming SIGKILL`,
        fieldsOf(p),
      );
      p.setExited({ exitStatus: 128 + 9, exitedAt: new Date() });
    }
  }
}

/** A process's ids as log fields. */
function fieldsOf(p: Proc): Fields {
  return { container: p.containerId, exec: p.execId || undefined, pid: p.pid || undefined };
}

function result(p: Proc): DeleteResult {
  return { pid: p.pid, exitStatus: p.exit?.exitStatus ?? 0, exitedAt: p.exit?.exitedAt };
}
