import { spawn } from "node:child_process";
import { closeSync } from "node:fs";
import { constants } from "node:os";
import type { Duplex } from "node:stream";
import { DEBUG_CONSOLE_PORT } from "../contract/ports.ts";
import type { Logger } from "../log/log.ts";
import { ptyAddon } from "../native/pty/addon.ts";
import { PtyStream } from "./stdio.ts";

export interface DebugShell {
  /** The pty master: write keystrokes, read the screen. Ends when the shell and its children are gone. */
  stream: PtyStream;
  pid: number;
  /** Resolves with the shell's exit code (128 + n when killed by signal n). */
  exited: Promise<number>;
  resize(cols: number, rows: number): void;
  /** SIGKILLs the shell and releases the pty. */
  close(): void;
}

/**
 * Starts a shell on a new pty for the debug console (DEBUG_CONSOLE_PORT). `setsid -c` (busybox and util-linux)
 * makes the pty the shell's controlling terminal, so job control and ^C work; the shell stays a direct child,
 * so libuv reaps it.
 */
export function spawnDebugShell(shell = "/bin/sh", opts: { env?: NodeJS.ProcessEnv } = {}): DebugShell {
  const { master, slave } = ptyAddon().openPty();
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn("setsid", ["-c", shell], {
      stdio: [slave, slave, slave],
      env: opts.env ?? { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", TERM: "vt100", HOME: "/" },
    });
  } catch (e) {
    closeSync(master);
    throw e;
  } finally {
    closeSync(slave);
  }
  const stream = new PtyStream(master);
  const exited = new Promise<number>((resolve, reject) => {
    child.once("error", (e) => {
      stream.destroy();
      reject(new Error(`debug shell: cannot run setsid -c ${shell}: ${e.message}`));
    });
    child.once("exit", (code, signal) => {
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
  exited.catch(() => undefined);
  return {
    stream,
    pid: child.pid ?? 0,
    exited,
    resize: (cols, rows) => stream.resize(cols, rows),
    close: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      stream.destroy();
    },
  };
}

/** One debug shell for one connection: the connection's bytes go to its pty and back; either end closes both. */
export function serveDebugShell(conn: Duplex, shell: string): DebugShell {
  const sh = spawnDebugShell(shell);
  conn.pipe(sh.stream).pipe(conn);
  const end = () => {
    sh.close();
    conn.destroy();
  };
  conn.on("close", end);
  conn.on("error", end);
  void sh.exited.then(end);
  return sh;
}

/**
 * task.debug: a shell on a pty for each connection to DEBUG_CONSOLE_PORT, through `listen` (the agent's host-only
 * listener). Without task.debug the port is not listened on at all; returns null then.
 */
export function serveDebugConsole<L>(
  params: { debug: boolean; debugShell: string },
  listen: (port: number, serve: (conn: Duplex) => void) => L,
  log: Pick<Logger, "warn">,
): L | null {
  if (!params.debug) return null;
  const l = listen(DEBUG_CONSOLE_PORT, (conn) => serveDebugShell(conn, params.debugShell));
  log.warn(`task.debug is set: a debug shell (${params.debugShell}) is served on vsock port ${DEBUG_CONSOLE_PORT}`);
  return l;
}
