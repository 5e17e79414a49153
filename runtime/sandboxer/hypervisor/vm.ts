import { chown, link, lstat, mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { DISK_SERIAL } from "../../contract/block.ts";
import type { Logger } from "../../log/log.ts";
import type { CommonConfig } from "../config/common-tables.ts";
import { ConsoleCapture } from "./console.ts";
import { helperUids, killAllOf, type UidRange } from "./helper-uid.ts";
import type { HypervisorKind } from "./names.ts";
import {
  isAlive,
  type ProcRef,
  type SpawnSpec,
  signalProc,
  sizeOf,
  spawnDetached,
  tail,
  waitForPath,
  waitGone,
} from "./process.ts";
import type {
  AgentAddress,
  DeviceRemoval,
  DiskSpec,
  DriverEnv,
  Exit,
  Hypervisor,
  HypervisorState,
  SandboxSpec,
  Started,
  VmShape,
  VmStatus,
} from "./vm-api.ts";

/** A helper process the VMM needs running first, ready once readyPath (its socket) exists. */
export type HelperSpec = SpawnSpec & {
  readyPath: string;
  /** Sockets the helper makes in ownDir, linked into the root-only sandbox directory once it is ready (publishSocket). */
  publish?: { from: string; to: string }[];
} & (
    | { ownDir?: undefined; uids?: undefined }
    | {
        /**
         * A directory made afresh for the helper, its working directory and the only place it can write: owned by
         * the sandbox's helper uid when it has one (the helper then runs under that uid).
         */
        ownDir: string;
        /** The range the sandbox's helper uid comes from (sandbox.helper_uid_base, _count); base 0: root. */
        uids: UidRange;
      }
  );

/** Everything one start of a VM needs: built by each driver from the config, the sandbox and probed host facts. */
export interface Plan {
  helpers: HelperSpec[];
  vmm: SpawnSpec;
  agentAddress: AgentAddress;
  consoleLog: string;
  /** The VMM's serial console socket (the VMM listens), which the daemon reads into consoleLog. */
  consoleSocket: string;
  controlSocket: string;
  /** Sockets and files the VMM or helpers create, removed before starting and after the VM is gone. */
  files: string[];
  extra: HypervisorState["extra"];
}

/** Thrown by a driver when a start failed in a way another attempt can fix (a vsock CID already taken). */
export class RetryStart extends Error {}

const HELPER_READY_MS = 10_000;
const CONTROL_READY_MS = 15_000;
const QUIT_GRACE_MS = 3_000;
const HELPER_TERM_MS = 2_000;
const START_ATTEMPTS = 5;
/** How long a recorded VMM's control socket may take to answer after a daemon restart. */
const RECOVER_MS = 3_000;
/** How long the console reader may take, once the VMM is gone, to save the last output (a guest panic). */
const CONSOLE_DRAIN_MS = 1_000;
export const PID_FILE = "vmm.pid";

export function newState(kind: HypervisorKind, sandbox: SandboxSpec): HypervisorState {
  return {
    kind,
    id: sandbox.id,
    dir: sandbox.dir,
    helpers: [],
    consoleLog: path.join(sandbox.dir, "console.log"),
    controlSocket: "",
    files: [],
    devices: {},
    extra: {},
    ...(sandbox.cgroupProcs?.length ? { cgroupProcs: sandbox.cgroupProcs } : {}),
  };
}

/** Resolves true if p settles within ms. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<false>((r) => {
    timer = setTimeout(() => r(false), ms);
  });
  const done = await Promise.race([p.then(() => true), t]);
  clearTimeout(timer);
  return done;
}

/**
 * The lifecycle every VMM shares: helpers first, the VMM detached with its pid recorded, readiness through the
 * control socket, exit tracking for processes this daemon did or did not start, staged stop and cleanup.
 * Drivers supply the plan and speak their control protocol.
 */
export abstract class VmmDriver<C extends CommonConfig = CommonConfig> implements Hypervisor {
  abstract readonly kind: HypervisorKind;
  protected readonly log: Logger;
  private exit?: Promise<Exit>;
  /** Woken when the control connection drops, so an exit is noticed without waiting for the next poll. */
  protected controlLost = new AbortController();
  /** Set when the VMM reported an orderly shutdown: the exit status of a VMM we did not start is then 0. */
  protected shutdownSeen = false;
  private detached = false;
  private console?: ConsoleCapture;
  /** This driver holds state.helperUid in the daemon's pool: only then may cleanup kill its processes and free it. */
  private ownsHelperUid = false;

  /** input is what a new VM is started from; a recovered one has none and can only be watched and stopped. */
  constructor(
    protected state: HypervisorState,
    protected readonly env: DriverEnv,
    private readonly input?: { config: C; sandbox: SandboxSpec },
  ) {
    this.log = env.log.child(`${state.kind}:${state.id}`);
  }

  /** The configuration and sandbox a plan is made from. */
  protected startInput(): { config: C; sandbox: SandboxSpec } {
    if (!this.input) throw new Error(`sandbox ${this.id}: a recovered VM cannot be started again`);
    return this.input;
  }

  get id(): string {
    return this.state.id;
  }

  private inCgroup<T extends SpawnSpec>(spec: T): T {
    return this.state.cgroupProcs ? { ...spec, cgroupProcs: this.state.cgroupProcs } : spec;
  }

  /** Probes the host and builds the plan; attempt counts restarts after RetryStart. */
  protected abstract plan(attempt: number): Promise<Plan>;
  /** Connects the control channel; keepTrying() turns false once the VMM has exited. */
  protected abstract connectControl(timeoutMs: number, keepTrying: () => boolean): Promise<void>;
  protected abstract closeControl(): void;
  /** Maps a failed start's log to RetryStart when another attempt can succeed. */
  protected retryable(_log: string): boolean {
    return false;
  }
  /** ACPI power button; rejects when the VMM cannot do it. */
  protected abstract powerButton(): Promise<void>;
  /** Makes the VMM process exit now. */
  protected abstract quit(): Promise<void>;
  abstract status(): Promise<VmStatus>;
  abstract hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }>;
  abstract removeDevice(id: string, opts?: { timeoutMs?: number }): Promise<DeviceRemoval>;
  abstract size(): Promise<VmShape>;
  abstract grow(target: { vcpus: number; memoryMiB: number }): Promise<void>;

  async start(): Promise<Started> {
    if (this.state.vmm) throw new Error(`sandbox ${this.id}: the VM was already started (pid ${this.state.vmm.pid})`);
    for (let attempt = 0; ; attempt++) {
      const plan = await this.plan(attempt);
      try {
        return await this.launch(plan);
      } catch (err) {
        if (!(err instanceof RetryStart) || attempt + 1 >= START_ATTEMPTS) throw err;
        this.log.info(`start attempt ${attempt + 1} failed (${err.message}); retrying`);
      }
    }
  }

  private async launch(plan: Plan): Promise<Started> {
    const maxBytes = this.startInput().config.sandbox.console_log_max_mb * 1024 * 1024;
    Object.assign(this.state, {
      agentAddress: plan.agentAddress,
      consoleLog: plan.consoleLog,
      console: { socket: plan.consoleSocket, maxBytes },
      controlSocket: plan.controlSocket,
      files: [...plan.files, path.join(this.state.dir, PID_FILE)],
      extra: plan.extra,
      helperDirs: plan.helpers.flatMap((h) => (h.ownDir ? [h.ownDir] : [])),
    });
    await Promise.all(this.state.files.map((f) => rm(f, { force: true })));
    // Logs are appended across attempts: only this attempt's lines explain its failure.
    const logFrom = await sizeOf(plan.vmm.logFile);
    let vmmExited: Promise<number> | undefined;
    try {
      for (const h of plan.helpers) {
        const spec = h.ownDir ? await this.confine(h, h.ownDir, h.uids) : h;
        this.log.debug(
          `starting ${h.name}${spec.user ? ` as uid ${spec.user.uid}` : ""}: ${h.path} ${h.args.join(" ")}`,
        );
        const s = await spawnDetached(this.inCgroup(spec));
        this.state.helpers.push({ name: h.name, ...s.ref });
        for (const ready of [h.readyPath, ...(h.publish ?? []).map((p) => p.from)]) {
          await waitForPath(ready, HELPER_READY_MS, s.exited, h.name).catch(async (err: Error) => {
            throw new Error(`${err.message}; its log ${h.logFile}:\n${await tail(h.logFile)}`);
          });
        }
        for (const p of h.publish ?? []) await publishSocket(p.from, p.to, spec.user?.uid ?? 0);
      }
      this.log.info(`starting ${plan.vmm.name}: ${plan.vmm.path} ${plan.vmm.args.join(" ")}`);
      const s = await spawnDetached(this.inCgroup(plan.vmm));
      this.state.vmm = s.ref;
      vmmExited = s.exited;
      // At once: the VMM drops console output while no one is connected.
      this.captureConsole();
      let gone = false;
      this.exit = s.exited.then((exitStatus) => {
        gone = true;
        return { exitStatus, exitedAt: new Date() };
      });
      await Promise.race([
        this.connectControl(CONTROL_READY_MS, () => !gone),
        s.exited.then((status) => {
          throw new Error(`${plan.vmm.name} exited with status ${status} while starting`);
        }),
      ]);
      await writeFile(path.join(this.state.dir, PID_FILE), `${s.ref.pid}\n`);
    } catch (err) {
      const log = await tail(plan.vmm.logFile, 15, logFrom);
      await this.abortStart(vmmExited);
      const msg = `sandbox ${this.id}: ${(err as Error).message}`;
      if (vmmExited && this.retryable(log)) throw new RetryStart(msg);
      throw new Error(log ? `${msg}; ${plan.vmm.logFile}:\n${log}` : msg);
    }
    this.exit = this.exit!.then((e) => this.finish(e));
    return { pid: this.state.vmm.pid, agentAddress: plan.agentAddress, consoleLog: plan.consoleLog };
  }

  /**
   * Gives a helper its own fresh directory to work in and, with a uid range whose base is not 0, the sandbox's own
   * uid: the sandbox directory stays root's alone, as the helper never has to pass through it.
   */
  private async confine(h: HelperSpec, dir: string, range: UidRange): Promise<HelperSpec> {
    if (range.base !== 0 && this.state.helperUid === undefined) {
      this.state.helperUid = await helperUids.allocate(this.id, range);
      this.ownsHelperUid = true;
    }
    const uid = this.state.helperUid;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { mode: 0o700 });
    if (uid === undefined) return { ...h, cwd: dir };
    await chown(dir, uid, uid);
    return { ...h, cwd: dir, user: { uid, gid: uid } };
  }

  private async abortStart(vmmExited: Promise<number> | undefined): Promise<void> {
    this.closeControl();
    if (this.state.vmm && vmmExited) {
      await signalProc(this.state.vmm, "SIGKILL");
      await vmmExited;
    }
    await this.cleanup();
    this.state.vmm = undefined;
    this.exit = undefined;
  }

  /** After the VMM is gone: close the control channel and clean up helpers and files. */
  private async finish(e: Exit): Promise<Exit> {
    // A detached driver no longer owns the VM: whoever recovered it cleans up.
    if (this.detached) return e;
    this.closeControl();
    await this.cleanup().catch((err: Error) => this.log.warn(`cleanup: ${err.message}`));
    this.log.info(`VMM exited with status ${e.exitStatus}`);
    return e;
  }

  wait(): Promise<Exit> {
    if (!this.exit) {
      const vmm = this.state.vmm;
      if (!vmm) return Promise.reject(new Error(`sandbox ${this.id}: the VM was never started`));
      // Not our child (the daemon restarted): poll /proc, woken early when the control socket closes.
      this.exit = waitGone(vmm, this.env.pollMs, this.controlLost.signal)
        .then(() => ({ exitStatus: this.shutdownSeen ? 0 : 255, exitedAt: new Date() }))
        .then((e) => this.finish(e));
    }
    return this.exit;
  }

  async stop(timeoutMs: number): Promise<Exit> {
    const exit = this.wait();
    if (await settlesWithin(exit, 0)) return exit;
    if (timeoutMs > 0) {
      const asked = await this.powerButton().then(
        () => true,
        (err: Error) => {
          this.log.info(`no ACPI power-off (${err.message}); asking the VMM to quit`);
          return false;
        },
      );
      if (asked && (await settlesWithin(exit, timeoutMs))) return exit;
    }
    await this.quit().catch((err: Error) => this.log.info(`quit: ${err.message}`));
    if (await settlesWithin(exit, QUIT_GRACE_MS)) return exit;
    this.log.warn(`VMM pid ${this.state.vmm?.pid} did not exit; killing it`);
    if (this.state.vmm) await signalProc(this.state.vmm, "SIGKILL");
    return exit;
  }

  /** Starts reading the VMM's console socket into the console log (not for VMs whose VMM writes the file itself). */
  private captureConsole(): void {
    const c = this.state.console;
    if (c && !this.console) {
      this.console = new ConsoleCapture(
        { socket: c.socket, file: this.state.consoleLog, maxBytes: c.maxBytes },
        this.log,
      );
    }
  }

  async cleanup(): Promise<void> {
    const capture = this.console;
    this.console = undefined;
    await capture?.stop(CONSOLE_DRAIN_MS);
    await Promise.all(this.state.helpers.map((h) => this.stopHelper(h)));
    this.state.helpers = [];
    const uid = this.state.helperUid;
    if (uid !== undefined && this.ownsHelperUid) {
      // What a taken-over helper forked would otherwise live on under a uid the next sandbox gets.
      const left = await killAllOf(uid);
      if (left.length) this.log.warn(`processes ${left.join(", ")} of helper uid ${uid} survived SIGKILL`);
    }
    await Promise.all((this.state.helperDirs ?? []).map((d) => rm(d, { recursive: true, force: true })));
    await Promise.all(this.state.files.map((f) => rm(f, { force: true })));
    if (uid !== undefined && this.ownsHelperUid) {
      helperUids.release(uid, this.id);
      this.ownsHelperUid = false;
      this.state.helperUid = undefined;
    }
  }

  private async stopHelper(h: ProcRef & { name: string }): Promise<void> {
    if (!(await signalProc(h, "SIGTERM"))) return;
    const gone = waitGone(h, 50);
    if (!(await settlesWithin(gone, HELPER_TERM_MS))) {
      this.log.warn(`${h.name} (pid ${h.pid}) ignored SIGTERM; killing it`);
      await signalProc(h, "SIGKILL");
      await gone;
    }
  }

  detach(): void {
    this.detached = true;
    this.closeControl();
    // The VM keeps running and its console socket stays: a recovering daemon connects again.
    void this.console?.stop();
    this.console = undefined;
  }

  persistState(): HypervisorState {
    return structuredClone(this.state);
  }

  /** After a daemon restart: the recorded VMM must still run and its control socket answer within timeoutMs. */
  async reattach(timeoutMs = RECOVER_MS): Promise<this> {
    const vmm = this.state.vmm;
    try {
      if (this.state.helperUid !== undefined) {
        helperUids.hold(this.state.helperUid, this.id);
        this.ownsHelperUid = true;
      }
      if (!vmm) throw new Error(`sandbox ${this.id}: no VMM pid recorded`);
      if (!(await isAlive(vmm))) throw new Error(`sandbox ${this.id}: VMM pid ${vmm.pid} is no longer running`);
      await this.connectControl(timeoutMs, () => true).catch((err: Error) => {
        throw new Error(`sandbox ${this.id}: VMM pid ${vmm.pid} runs but ${err.message}`);
      });
    } catch (err) {
      // Nothing else will end a VMM that cannot be reattached (frozen, hung) or the helpers of a dead one.
      if (vmm) await signalProc(vmm, "SIGKILL");
      await this.cleanup();
      throw err;
    }
    this.captureConsole();
    this.wait();
    return this;
  }
}

/**
 * Gives a socket a helper made in its own directory a second name in the sandbox directory (root's alone), which the
 * VMM and the daemon connect through: whatever the helper later puts at its own name (a symbolic link to another
 * socket) is never followed by root.
 */
export async function publishSocket(from: string, to: string, owner: number): Promise<void> {
  await rm(to, { force: true });
  // link(2) does not follow a symbolic link at `from`: one swapped in is linked as itself and refused below.
  await link(from, to);
  const s = await lstat(to);
  if (!s.isSocket() || s.uid !== owner) {
    await rm(to, { force: true });
    throw new Error(
      `${from} is not a socket of uid ${owner} (it is ${s.isSymbolicLink() ? "a symbolic link" : s.isSocket() ? "a socket" : "another kind of file"} ` +
        `of uid ${s.uid}): refusing to use it; the helper's directory was tampered with`,
    );
  }
}

/** Files the configuration names that must exist before QEMU is worth starting. */
export async function checkFiles(config: CommonConfig, env: DriverEnv, keys: string[]): Promise<void> {
  const h = config.hypervisor as unknown as Record<string, string>;
  const missing: string[] = [];
  for (const key of keys) {
    const file = h[key];
    if (file && !(await env.probes.exists(file))) missing.push(`hypervisor.${key} = ${file} does not exist`);
  }
  if (missing.length > 0) {
    throw new Error(
      `${missing.join("; ")} (${config.file ?? "default configuration"}): build the guest with ` +
        "`make bin/vmlinux.bin bin/kuasar.img` and install it with `make install-vmm`, or fix the paths",
    );
  }
}

/** The disk ids hotplugDisk accepts: also the virtio-blk serial, which holds 20 bytes. */
export function checkDiskId(sandboxId: string, id: string): void {
  if (!DISK_SERIAL.test(id)) {
    throw new Error(
      `sandbox ${sandboxId}: disk id '${id}' must be 1-20 characters from [A-Za-z0-9_-] (it is the disk serial)`,
    );
  }
}
