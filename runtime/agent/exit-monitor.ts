import { EventEmitter } from "node:events";
import { closeSync, fstatSync, openSync } from "node:fs";
import { Socket } from "node:net";
import { constants } from "node:os";
import type { Readable } from "node:stream";
import { uptimeMs } from "./uptime.ts";

/** Set by runtime/native/init for its child: the fd on which it reports reaped orphans. */
export const INIT_EXIT_FD_ENV = "KUASAR_INIT_EXIT_FD";

export interface ExitInfo {
  pid: number;
  /** As containerd reports it: the exit code, or 128 + signal number when killed by a signal. */
  exitStatus: number;
  signal?: NodeJS.Signals;
  coreDumped?: boolean;
  /** When the report was read (init reports right after reaping). */
  exitedAt: Date;
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/** Decodes a raw waitpid() status: exit code, or 128 + signal when a signal ended the process. */
export function decodeWaitStatus(raw: number): Pick<ExitInfo, "exitStatus" | "signal" | "coreDumped"> {
  const sig = raw & 0x7f;
  if (sig === 0) return { exitStatus: (raw >> 8) & 0xff };
  if (sig === 0x7f) throw new RangeError(`wait status ${raw} describes a stopped process, not an exit`);
  const signal = signalNames.get(sig);
  return { exitStatus: 128 + sig, ...(signal ? { signal } : {}), coreDumped: (raw & 0x80) !== 0 };
}

export interface ExitMonitorOptions {
  /** Unclaimed exits kept at most (oldest dropped first); default 4096. */
  maxUnclaimed?: number;
  /** Unclaimed exits older than this are dropped; default 5 minutes. */
  maxAgeMs?: number;
}

interface Unclaimed {
  info: ExitInfo;
  seq: number;
  at: number;
}

interface Waiter {
  resolve(info: ExitInfo): void;
  reject(err: Error): void;
}

/**
 * The exit statuses of orphaned processes (containers started by runc) as init reports them on fd 3.
 * An exit that arrives before anyone waits for its pid is kept (bounded, aged out) until claimed; a claim
 * consumes it, so wait once per process and share the promise. Emits 'exit' (ExitInfo) for every report.
 */
export class ExitMonitor extends EventEmitter {
  readonly #source: Readable;
  readonly #maxUnclaimed: number;
  readonly #maxAgeMs: number;
  readonly #unclaimed = new Map<number, Unclaimed>();
  readonly #waiters = new Map<number, Waiter[]>();
  #seq = 0;
  #partial = "";
  #ended: Error | null = null;

  constructor(source: Readable, opts: ExitMonitorOptions = {}) {
    super();
    this.#source = source;
    this.#maxUnclaimed = opts.maxUnclaimed ?? 4096;
    this.#maxAgeMs = opts.maxAgeMs ?? 5 * 60_000;
    source.setEncoding("latin1");
    source.on("data", (chunk: string) => this.#onData(chunk));
    source.on("end", () =>
      this.#end(new Error("init closed the exit report pipe; no further exit statuses will arrive")),
    );
    source.on("error", (err) => this.#end(new Error(`reading exit reports from init failed: ${err.message}`)));
  }

  /**
   * Opens the report pipe that runtime/native/init passes as fd 3. Throws, rather than waiting forever,
   * when this process was not started by that init.
   */
  static fromInit(opts?: ExitMonitorOptions): ExitMonitor {
    const value = process.env[INIT_EXIT_FD_ENV];
    const hint =
      "orphaned container processes can be neither reaped nor reported; run the agent under runtime/native/init " +
      "(PID 1 in the guest, or `init -- node <agent>` on a host)";
    if (value === undefined)
      throw new Error(`exit monitor: ${INIT_EXIT_FD_ENV} is not set, so there is no init: ${hint}`);
    const fd = Number(value);
    if (!Number.isInteger(fd) || fd < 3)
      throw new Error(`exit monitor: ${INIT_EXIT_FD_ENV}=${value} is not an fd >= 3`);
    let isPipe: boolean;
    try {
      isPipe = fstatSync(fd).isFIFO();
    } catch (e) {
      throw new Error(
        `exit monitor: ${INIT_EXIT_FD_ENV}=${fd} but fd ${fd} is not open (${(e as Error).message}): ${hint}`,
      );
    }
    if (!isPipe) throw new Error(`exit monitor: fd ${fd} is not the pipe from init: ${hint}`);
    // Reopen with O_CLOEXEC and close the inherited fd, so runc and other children do not inherit the pipe.
    const own = openSync(`/proc/self/fd/${fd}`, "r");
    closeSync(fd);
    delete process.env[INIT_EXIT_FD_ENV];
    return new ExitMonitor(new Socket({ fd: own, readable: true, writable: false }), opts);
  }

  /** A point in the report stream; waitExit(pid, { after }) ignores exits reported up to it (pid reuse). */
  mark(): number {
    return this.#seq;
  }

  /** Exits received but not yet claimed. */
  get unclaimedCount(): number {
    return this.#unclaimed.size;
  }

  /**
   * Resolves with the exit of `pid`, whether it was reported before or after this call. Pass `after` (from
   * mark(), taken before the process was started) so an old report for a reused pid is not mistaken for it.
   */
  waitExit(pid: number, opts: { after?: number } = {}): Promise<ExitInfo> {
    const after = opts.after ?? -1;
    const hit = this.#unclaimed.get(pid);
    if (hit) {
      this.#unclaimed.delete(pid);
      if (hit.seq > after) return Promise.resolve(hit.info);
    }
    if (this.#ended) return Promise.reject(new Error(`waiting for the exit of pid ${pid}: ${this.#ended.message}`));
    return new Promise((resolve, reject) => {
      const list = this.#waiters.get(pid) ?? [];
      list.push({ resolve, reject });
      this.#waiters.set(pid, list);
    });
  }

  /** Stops reading; pending waits reject. */
  close(): void {
    this.#end(new Error("the exit monitor was closed"));
    this.#source.destroy();
  }

  #onData(chunk: string): void {
    const lines = (this.#partial + chunk).split("\n");
    this.#partial = lines.pop() ?? "";
    for (const line of lines) this.#onLine(line);
  }

  #onLine(line: string): void {
    const m = /^(\d+) (\d+)$/.exec(line);
    if (!m) {
      process.emitWarning(`exit monitor: ignoring malformed report from init: ${JSON.stringify(line)}`);
      return;
    }
    const pid = Number(m[1]);
    let info: ExitInfo;
    try {
      info = { pid, ...decodeWaitStatus(Number(m[2])), exitedAt: new Date() };
    } catch (e) {
      process.emitWarning(`exit monitor: pid ${pid}: ${(e as Error).message}`);
      return;
    }
    const seq = ++this.#seq;
    this.emit("exit", info);
    const waiters = this.#waiters.get(pid);
    if (waiters) {
      this.#waiters.delete(pid);
      for (const w of waiters) w.resolve(info);
      return;
    }
    // Newest report wins for a pid; re-inserting keeps the map ordered oldest first for pruning.
    this.#unclaimed.delete(pid);
    this.#unclaimed.set(pid, { info, seq, at: uptimeMs() });
    this.#prune();
  }

  #prune(): void {
    const oldest = uptimeMs() - this.#maxAgeMs;
    for (const [pid, u] of this.#unclaimed) {
      if (this.#unclaimed.size <= this.#maxUnclaimed && u.at >= oldest) break;
      this.#unclaimed.delete(pid);
    }
  }

  #end(err: Error): void {
    if (this.#ended) return;
    this.#ended = err;
    for (const [pid, list] of this.#waiters) {
      for (const w of list) w.reject(new Error(`waiting for the exit of pid ${pid}: ${err.message}`));
    }
    this.#waiters.clear();
  }
}
