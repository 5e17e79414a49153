import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { constants } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A process identified beyond its pid: the start time (clock ticks since boot, /proc/<pid>/stat field 22) tells a
 * recycled pid from the process we started, which matters when a restarted daemon signals a recorded pid.
 */
export interface ProcRef {
  pid: number;
  startTime: number;
}

/** Start time of a live (non-zombie) process, or undefined when there is none with this pid. */
export async function procStartTime(pid: number): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: fields are counted from the last ')'.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  if (rest[0] === "Z" || rest[0] === "X") return undefined;
  const t = Number(rest[19]);
  return Number.isFinite(t) ? t : undefined;
}

export async function isAlive(ref: ProcRef): Promise<boolean> {
  return (await procStartTime(ref.pid)) === ref.startTime;
}

/** Signals the process only if it is still the one recorded. */
export async function signalProc(ref: ProcRef, signal: NodeJS.Signals): Promise<boolean> {
  if (!(await isAlive(ref))) return false;
  try {
    process.kill(ref.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once the process is gone; `wake` lets a caller cut a poll short (e.g. its control socket closed). */
export async function waitGone(ref: ProcRef, pollMs: number, wake?: AbortSignal): Promise<void> {
  while (await isAlive(ref)) {
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        wake?.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, pollMs);
      wake?.addEventListener("abort", done, { once: true });
    });
  }
}

/** Exit status as a shell reports it: the code, or 128 + signal number. */
export function exitStatusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
}

export interface SpawnSpec {
  /** Short name for logs and errors (qemu, virtiofsd, vhost-device-vsock, ...). */
  name: string;
  path: string;
  args: string[];
  /** stdout and stderr go here (appended), never to the daemon: VMs outlive it. */
  logFile: string;
  /** Host fds handed to the child as fd 3, 4, ... (tap queues). */
  fds?: number[];
  /** Run inside this network namespace (nsenter execs, so the pid is the program's own). */
  netnsPath?: string;
  /** Added to the daemon's environment. */
  env?: Record<string, string>;
  /** cgroup.procs files the process joins before it execs, so every page it touches is charged there. */
  cgroupProcs?: string[];
  /** Working directory (a helper names its files relative to it, so it needs no way through the directories above). */
  cwd?: string;
  /** Run under this uid and gid, with no supplementary groups, no capabilities and no_new_privs. */
  user?: { uid: number; gid: number };
  /**
   * The name the program sees as argv[0], so /proc/<pid>/cmdline still names its sandbox directory when its
   * arguments are relative to cwd (the daemon's leftover sweep and ps find it by that).
   */
  argv0?: string;
}

/** sh script: write our pid to each file before "--", then exec the rest. */
const JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"';
/** util-linux's setpriv (on every Debian host): drops to spec.user right before the program is executed. */
export const SETPRIV = "/usr/bin/setpriv";
/** bash's `exec -a` sets argv[0] (Debian's bash is essential; dash's exec has no -a). */
export const BASH = "/bin/bash";

/**
 * The program and arguments that start spec, outermost first: the cgroup join (needs root), the network namespace
 * (needs root), the privilege drop, the argv[0] label, the program.
 */
export function commandOf(spec: SpawnSpec): [string, string[]] {
  let argv = [spec.path, ...spec.args];
  if (spec.argv0) argv = [BASH, "-c", 'exec -a "$0" "$@"', spec.argv0, ...argv];
  if (spec.user) {
    const { uid, gid } = spec.user;
    argv = [
      ...[SETPRIV, `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups"],
      ...["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"],
      ...argv,
    ];
  }
  if (spec.netnsPath) argv = ["nsenter", `--net=${spec.netnsPath}`, "--", ...argv];
  if (spec.cgroupProcs?.length) argv = ["/bin/sh", "-c", JOIN_CGROUPS, "sh", ...spec.cgroupProcs, "--", ...argv];
  return [argv[0]!, argv.slice(1)];
}

export interface Spawned {
  ref: ProcRef;
  /** Settles with the exit status; listened for from the moment of spawning, so a quick death is never missed. */
  exited: Promise<number>;
}

/**
 * Starts a process in its own session with no pipes to the daemon, so it survives a daemon restart
 * (KillMode=process) and never blocks on a full pipe nobody reads.
 */
export async function spawnDetached(spec: SpawnSpec): Promise<Spawned> {
  const [file, args] = commandOf(spec);
  if (file !== spec.path) {
    // Behind a wrapper a missing program is an exit status; say what is missing as the direct spawn does.
    if (path.isAbsolute(spec.path) && !existsSync(spec.path)) {
      throw new Error(`${spec.name}: ${spec.path} not found (install it or fix its path in the configuration)`);
    }
    if (spec.argv0 && !existsSync(BASH)) throw new Error(`${spec.name}: ${BASH} not found (apt-get install bash)`);
    if (spec.user && !existsSync(SETPRIV)) {
      throw new Error(
        `${spec.name}: ${SETPRIV} not found: it runs the helper under its own uid (install util-linux, or set ` +
          "sandbox.helper_uid_base = 0 to run helpers as root)",
      );
    }
  }
  const log = openSync(spec.logFile, "a", 0o640);
  let child: ChildProcess;
  let exited: Promise<number>;
  try {
    child = spawn(file, args, {
      detached: true,
      stdio: ["ignore", log, log, ...(spec.fds ?? [])],
      ...(spec.cwd ? { cwd: spec.cwd } : {}),
      ...(spec.env ? { env: { ...process.env, ...spec.env } } : {}),
    });
    exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve(exitStatusOf(code, signal))));
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          new Error(
            err.code === "ENOENT"
              ? `${spec.name}: ${file} not found (install it or fix its path in the configuration)`
              : `${spec.name}: cannot start ${file}: ${err.message}`,
          ),
        ),
      );
    });
  } finally {
    closeSync(log);
  }
  child.unref();
  const pid = child.pid!;
  const startTime = await procStartTime(pid);
  // A child that died at once has no /proc entry left; its exit is still reported through `child`.
  return { ref: { pid, startTime: startTime ?? -1 }, exited };
}

/** Resolves when `file` exists, rejects when `exited` settles first or the deadline passes. */
export async function waitForPath(
  file: string,
  timeoutMs: number,
  exited: Promise<unknown>,
  what: string,
): Promise<void> {
  let done = false;
  const gone = exited.then(() => {
    if (!done) throw new Error(`${what} exited before creating ${file}`);
  });
  gone.catch(() => {});
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      if (
        await stat(file).then(
          () => true,
          () => false,
        )
      )
        return;
      await Promise.race([sleep(20), gone]);
    }
    throw new Error(`${what} did not create ${file} within ${timeoutMs} ms`);
  } finally {
    done = true;
  }
}

/** The last lines of a log file written after byte offset `from`, for error messages. */
export async function tail(file: string, lines = 15, from = 0): Promise<string> {
  const buf = await readFile(file).catch(() => Buffer.alloc(0));
  return buf.subarray(from).toString("utf8").trimEnd().split("\n").slice(-lines).join("\n");
}

/** Current size of a file (0 when it does not exist yet). */
export async function sizeOf(file: string): Promise<number> {
  return stat(file).then(
    (s) => s.size,
    () => 0,
  );
}
