import { spawn } from "node:child_process";

/**
 * Runs the guest's few helper programs (runc, busybox ip/mount/umount/sync, the debug shell) on node's own
 * child_process. execa did this before: its ~120 modules took the agent's bundle from 0.80 to 1.04 MB and its
 * startup snapshot from 9.4 to 9.9 MB, evaluated in every guest, for options the agent does not use.
 */

/** Where a child's stdio goes: an fd the agent holds, nowhere, or a pipe whose text the result carries. */
export type Stdio = number | "ignore" | "pipe";

export interface RunOptions {
  /** Written to the child's stdin, which then closes; otherwise stdin is `stdin`. */
  input?: string | Uint8Array;
  stdin?: number | "ignore";
  stdout?: Stdio;
  stderr?: Stdio;
  /** SIGTERM after this long, then SIGKILL after `killAfterMs` (default 2 s). */
  timeoutMs?: number;
  killAfterMs?: number;
}

export interface RunResult {
  /** Exit status, or null when a signal ended it or it never ran. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Piped output, each capped at MAX_CAPTURE bytes. */
  stdout: string;
  stderr: string;
  /** stdout and stderr as they arrived, when both are piped. */
  all: string;
  timedOut: boolean;
  /** Why it could not be started (ENOENT: no such program). */
  spawnError?: NodeJS.ErrnoException;
  failed: boolean;
}

/** More output than this from one helper is cut: none of them prints that much unless something is wrong. */
export const MAX_CAPTURE = 16 << 20;
const EXIT_GRACE_MS = 1_000;

export function runProcess(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const stdin = opts.input !== undefined ? "pipe" : (opts.stdin ?? "ignore");
  const stdout = opts.stdout ?? "pipe";
  const stderr = opts.stderr ?? "pipe";
  return new Promise((resolve) => {
    const out: Record<"stdout" | "stderr" | "all", string[]> = { stdout: [], stderr: [], all: [] };
    const size = { stdout: 0, stderr: 0, all: 0 };
    const keep = (which: "stdout" | "stderr" | "all", text: string) => {
      if (size[which] >= MAX_CAPTURE) return;
      const cut = text.slice(0, MAX_CAPTURE - size[which]);
      out[which].push(cut);
      size[which] += cut.length;
    };
    let timedOut = false;
    let spawnError: NodeJS.ErrnoException | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const child = spawn(file, args, { stdio: [stdin, stdout, stderr] });
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill("SIGTERM");
            killTimer = setTimeout(() => child.kill("SIGKILL"), opts.killAfterMs ?? 2_000);
          }, opts.timeoutMs);
    for (const which of ["stdout", "stderr"] as const) {
      const stream = child[which];
      if (!stream) continue;
      stream.setEncoding("utf8");
      stream.on("data", (text: string) => {
        keep(which, text);
        keep("all", text);
      });
    }
    if (opts.input !== undefined && child.stdin) {
      // A child that exits without reading its input must not fail the run.
      child.stdin.on("error", () => undefined);
      child.stdin.end(opts.input);
    }
    child.on("error", (e: NodeJS.ErrnoException) => {
      spawnError ??= e;
    });
    // A grandchild can hold the pipes open after the child exited (a killed shell's sleep): its output is not waited
    // for past EXIT_GRACE_MS.
    child.on("exit", () => {
      setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, EXIT_GRACE_MS).unref();
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({
        exitCode: spawnError ? null : code,
        signal,
        stdout: out.stdout.join(""),
        stderr: out.stderr.join(""),
        all: out.all.join(""),
        timedOut,
        ...(spawnError ? { spawnError } : {}),
        failed: spawnError !== undefined || timedOut || code !== 0,
      });
    });
  });
}

/** What went wrong with a failed run, for an error message: its stderr, else how it ended. */
export function failure(r: RunResult): string {
  const how = r.spawnError
    ? r.spawnError.message
    : r.timedOut
      ? "timed out"
      : r.signal
        ? `killed by ${r.signal}`
        : `exit status ${r.exitCode}`;
  const said = (r.stderr || r.stdout).trim();
  return said ? `${how}: ${said}` : how;
}
