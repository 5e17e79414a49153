import type { Readable, Writable } from "node:stream";
import type { OciProcess } from "../contract/oci.ts";
import { TaskError } from "./errors.ts";
import { closeWritable, type PtyStream } from "./stdio.ts";

/** containerd's task status names (containerd.v1.types.Status). */
export type TaskStatus = "UNKNOWN" | "CREATED" | "RUNNING" | "STOPPED" | "PAUSED";

export interface Exit {
  /** The exit code, or 128 + signal number when a signal ended the process. */
  exitStatus: number;
  exitedAt: Date;
}

/**
 * Where exit statuses of container processes come from: they are orphaned when runc exits, so only the reaper
 * above the agent sees them (runtime/agent/exit-monitor.ts implements this for runtime/native/init).
 */
export interface ExitSource {
  /** A point in the report stream, taken before a process starts (see waitExit). */
  mark(): number;
  /** The exit of pid, reported before or after the call but after `after`. Call once per process. */
  waitExit(pid: number, opts?: { after?: number }): Promise<Exit>;
}

/** Caller-chosen stdio names (containerd's host paths), kept for State, and whether a terminal is wanted. */
export interface IoOptions {
  terminal?: boolean;
  stdin?: string;
  stdout?: string;
  stderr?: string;
}

/** The agent's side of a process's stdio. For a terminal process stdin and stdout are the same pty stream. */
export interface ProcessStdio {
  stdin?: Writable;
  stdout?: Readable;
  stderr?: Readable;
}

/** What the service layer sees of a process. */
export interface TaskProcess {
  readonly containerId: string;
  /** "" for the container's init process. */
  readonly execId: string;
  /** 0 until started (execs) or created (init). */
  readonly pid: number;
  readonly terminal: boolean;
  /** Ready after create() for an init, after start() for an exec; relay these to the host. */
  readonly stdio: ProcessStdio;
  readonly pty: PtyStream | undefined;
}

export type Phase = "created" | "starting" | "running" | "stopped";

/** One container process (init or exec) and its lifecycle. */
export class Proc implements TaskProcess {
  readonly containerId: string;
  readonly execId: string;
  readonly io: Required<IoOptions>;
  /** An exec's OCI process, run at start(). */
  readonly spec: OciProcess | undefined;
  pid = 0;
  phase: Phase = "created";
  exit: Exit | undefined;
  stdio: ProcessStdio = {};
  pty: PtyStream | undefined;
  /** A resize asked for before the pty existed. */
  pendingSize: { cols: number; rows: number } | undefined;
  readonly exited: Promise<Exit>;
  #resolve!: (e: Exit) => void;
  #reject!: (e: Error) => void;

  constructor(containerId: string, execId: string, io: IoOptions, spec?: OciProcess) {
    this.containerId = containerId;
    this.execId = execId;
    this.io = {
      terminal: io.terminal ?? false,
      stdin: io.stdin ?? "",
      stdout: io.stdout ?? "",
      stderr: io.stderr ?? "",
    };
    this.spec = spec;
    this.exited = new Promise<Exit>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Waiters attach their own handlers; this only keeps a rejection nobody waits for from being "unhandled".
    this.exited.catch(() => undefined);
  }

  get terminal(): boolean {
    return this.io.terminal;
  }

  get label(): string {
    return this.execId ? `exec ${this.execId} of container ${this.containerId}` : `container ${this.containerId}`;
  }

  setExited(exit: Exit): void {
    if (this.exit) return;
    this.exit = exit;
    this.phase = "stopped";
    this.#resolve(exit);
  }

  /** Ends waits on a process that will never report an exit. */
  abandon(why: string): void {
    if (this.exit) return;
    this.phase = "stopped";
    this.#reject(new TaskError("NotFound", `${this.label}: ${why}`));
  }

  closeStdin(): void {
    // A pty has no separate stdin: like containerd's shim, stop here and leave the terminal open.
    if (this.terminal || !this.stdio.stdin) return;
    closeWritable(this.stdio.stdin);
  }

  /** Releases every stdio fd the agent holds for this process. */
  closeStdio(): void {
    this.pty?.destroy();
    for (const s of [this.stdio.stdin, this.stdio.stdout, this.stdio.stderr]) s?.destroy();
  }
}
