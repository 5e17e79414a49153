import { mkdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { runProcess } from "./run-process.ts";

export interface RuncOptions {
  /** The runc binary (PATH lookup when not absolute). */
  binary?: string;
  /** runc's state directory (--root). */
  root?: string;
  /** Where each invocation's --log file is written (and removed afterwards). */
  logDir?: string;
  /** A runc command still running after this long is killed and reported as failed. */
  timeoutMs?: number;
}

/** `runc state` output. */
export interface RuncState {
  ociVersion: string;
  id: string;
  pid: number;
  status: "creating" | "created" | "running" | "pausing" | "paused" | "stopped";
  bundle: string;
  rootfs: string;
  created: string;
  owner?: string;
  annotations?: Record<string, string>;
}

/** The stats runc reports with `runc events --stats` (its own cgroup-version-neutral schema). */
export interface RuncStats {
  cpu?: { usage?: { total?: number; percpu?: number[]; kernel?: number; user?: number } };
  memory?: { usage?: { usage?: number; max?: number; limit?: number }; raw?: Record<string, number> };
  pids?: { current?: number; limit?: number };
  [key: string]: unknown;
}

/**
 * Stdio for a runc command whose container process inherits it (create, exec): an fd number becomes the
 * process's fd; undefined means /dev/null (never a pipe to the agent, which would stay open as long as the
 * container runs).
 */
export interface InheritedStdio {
  stdin?: number;
  stdout?: number;
  stderr?: number;
}

export class RuncError extends Error {
  readonly id: string;
  readonly command: string;
  /** runc's own error message (from its JSON log), when it wrote one. */
  readonly runcMessage: string;
  constructor(id: string, command: string, runcMessage: string, detail: string) {
    super(`runc ${command} ${id} failed: ${runcMessage || detail}`);
    this.name = "RuncError";
    this.id = id;
    this.command = command;
    this.runcMessage = runcMessage;
  }

  /** runc says the container is unknown to it. */
  get notExist(): boolean {
    return /container does not exist|container .* does not exist/.test(this.runcMessage);
  }

  /** runc says there is nothing left to signal. */
  get notRunning(): boolean {
    return /container not running|no such process|process already finished|not running/i.test(this.runcMessage);
  }
}

/** Numbers runc's log files (see Runc's runc-<command>-<pid>-<n>.json). */
let logSeq = 0;

/** A typed wrapper over the runc CLI; every error names the command and the container id. */
export class Runc {
  readonly binary: string;
  readonly root: string;
  readonly logDir: string;
  readonly timeoutMs: number;

  constructor(opts: RuncOptions = {}) {
    this.binary = opts.binary ?? "runc";
    this.root = opts.root ?? "/run/runc";
    this.logDir = opts.logDir ?? path.join(path.dirname(this.root), "runc-logs");
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /** runc create: sets up the container and leaves its process waiting for `start`. */
  async create(
    id: string,
    opts: { bundle: string; pidFile: string; consoleSocket?: string; noPivot?: boolean; stdio?: InheritedStdio },
  ): Promise<void> {
    const args = ["create", "--bundle", opts.bundle, "--pid-file", opts.pidFile];
    if (opts.consoleSocket) args.push("--console-socket", opts.consoleSocket);
    // pivot_root fails on an initramfs root (rootfs cannot be unmounted); MS_MOVE + chroot works there.
    if (opts.noPivot) args.push("--no-pivot");
    await this.#run(id, "create", [...args, id], { stdio: opts.stdio ?? {} });
  }

  async start(id: string): Promise<void> {
    await this.#run(id, "start", ["start", id]);
  }

  /** runc exec --detach: starts processFile's process (OCI Process JSON) in the container. */
  async exec(
    id: string,
    opts: { processFile: string; pidFile: string; consoleSocket?: string; stdio?: InheritedStdio },
  ): Promise<void> {
    const args = ["exec", "--detach", "--process", opts.processFile, "--pid-file", opts.pidFile];
    if (opts.consoleSocket) args.push("--console-socket", opts.consoleSocket);
    await this.#run(id, "exec", [...args, id], { stdio: opts.stdio ?? {} });
  }

  async kill(id: string, signal: number, opts: { all?: boolean } = {}): Promise<void> {
    await this.#run(id, "kill", ["kill", ...(opts.all ? ["--all"] : []), id, String(signal)]);
  }

  async delete(id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.#run(id, "delete", ["delete", ...(opts.force ? ["--force"] : []), id]);
  }

  async state(id: string): Promise<RuncState> {
    return this.#json<RuncState>(id, "state", ["state", id]);
  }

  /** The pids in the container's cgroup. */
  async ps(id: string): Promise<number[]> {
    return (await this.#json<number[] | null>(id, "ps", ["ps", "--format", "json", id])) ?? [];
  }

  async pause(id: string): Promise<void> {
    await this.#run(id, "pause", ["pause", id]);
  }

  async resume(id: string): Promise<void> {
    await this.#run(id, "resume", ["resume", id]);
  }

  /** runc update with an OCI LinuxResources object (passed on stdin). */
  async update(id: string, resources: object): Promise<void> {
    await this.#run(id, "update", ["update", "--resources", "-", id], { input: JSON.stringify(resources) });
  }

  /** One `runc events --stats` sample. */
  async stats(id: string): Promise<RuncStats> {
    const ev = await this.#json<{ type: string; data?: RuncStats }>(id, "events", ["events", "--stats", id]);
    if (ev.type !== "stats" || !ev.data) {
      throw new RuncError(id, "events", "", `expected a stats event, got ${JSON.stringify(ev).slice(0, 200)}`);
    }
    return ev.data;
  }

  async #json<T>(id: string, command: string, args: string[]): Promise<T> {
    const out = await this.#run(id, command, args, { capture: true });
    try {
      return JSON.parse(out) as T;
    } catch {
      throw new RuncError(id, command, "", `unparsable output ${JSON.stringify(out.slice(0, 200))}`);
    }
  }

  async #run(
    id: string,
    command: string,
    args: string[],
    opts: { stdio?: InheritedStdio; input?: string; capture?: boolean } = {},
  ): Promise<string> {
    await mkdir(this.logDir, { recursive: true });
    // Unique in this process, and the directory is the agent's own. Not random bytes: node:crypto had no other user
    // in the agent, and its modules were 0.2 MiB of the V8 snapshot that every guest loads.
    const log = path.join(this.logDir, `runc-${command}-${process.pid}-${++logSeq}.json`);
    const full = ["--root", this.root, "--log", log, "--log-format", "json", ...args];
    const stdio = opts.stdio ?? {};
    try {
      const r = await runProcess(this.binary, full, {
        timeoutMs: this.timeoutMs,
        ...(opts.input !== undefined ? { input: opts.input } : { stdin: stdio.stdin ?? "ignore" }),
        stdout: opts.capture ? "pipe" : (stdio.stdout ?? "ignore"),
        // create/exec hand runc's stderr to the container; its own errors are read from the log instead.
        stderr: opts.stdio ? (stdio.stderr ?? "ignore") : "pipe",
      });
      if (!r.failed) return r.stdout;
      const runcMessage = await lastError(log);
      const stderr = r.stderr.trim();
      const how = r.timedOut
        ? `timed out after ${this.timeoutMs} ms`
        : r.spawnError?.code === "ENOENT"
          ? `runc binary '${this.binary}' not found; install runc or set its path`
          : r.spawnError
            ? r.spawnError.message
            : r.signal
              ? `killed by ${r.signal}`
              : `exit status ${r.exitCode}`;
      throw new RuncError(id, command, runcMessage, stderr ? `${how}: ${stderr}` : how);
    } finally {
      await rm(log, { force: true });
    }
  }
}

/** The message of the last error-level line of runc's JSON log. */
async function lastError(file: string): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  let msg = "";
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as { level?: string; msg?: string };
      if ((e.level === "error" || e.level === "fatal") && e.msg) msg = e.msg;
    } catch {
      // runc writes plain text before its logger is set up; such a line is still the best description.
      msg = line.trim();
    }
  }
  return msg;
}
