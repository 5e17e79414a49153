import { closeSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { ptyAddon } from "../native/pty/addon.ts";
import { TaskError } from "./errors.ts";
import type { Proc } from "./process.ts";
import type { InheritedStdio } from "./runc.ts";
import { openStdioPipes, PtyStream } from "./stdio.ts";

/** What runc create or exec is given to hand the process its stdio and report its pid. */
export interface RuncLaunch {
  pidFile: string;
  consoleSocket?: string;
  stdio?: InheritedStdio;
}

export interface LaunchOptions {
  /** Where runc writes the pid (removed once read). */
  pidFile: string;
  /** Where runc sends a terminal process's pty master; short, as unix socket paths are limited to 107 bytes. */
  consoleSocket: string;
  /** How long to wait for the pty master after runc succeeded. */
  consoleTimeoutMs: number;
}

/**
 * Runs runc (create or exec) for p with its stdio: a pty whose master runc sends over a console socket for a
 * terminal process, real pipes otherwise. Sets p's stdio (and pty) and returns the pid runc wrote.
 */
export async function launchProcess(
  p: Proc,
  run: (r: RuncLaunch) => Promise<void>,
  opts: LaunchOptions,
): Promise<number> {
  const { pidFile, consoleSocket } = opts;
  if (p.terminal) {
    await rm(consoleSocket, { force: true });
    const addon = ptyAddon();
    const listenFd = addon.listenUnix(consoleSocket);
    try {
      await run({ pidFile, consoleSocket });
      const pty = new PtyStream(addon.recvFd(listenFd, opts.consoleTimeoutMs));
      if (p.pendingSize) pty.resize(p.pendingSize.cols, p.pendingSize.rows);
      p.pty = pty;
      p.stdio = { stdin: pty, stdout: pty };
    } finally {
      closeSync(listenFd);
      await rm(consoleSocket, { force: true });
    }
  } else {
    const pipes = openStdioPipes({ stdin: !!p.io.stdin, stdout: !!p.io.stdout, stderr: !!p.io.stderr });
    p.stdio = pipes.streams;
    try {
      await run({ pidFile, stdio: pipes.child });
    } finally {
      pipes.releaseChild();
    }
  }
  const text = await readFile(pidFile, "utf8").catch(() => "");
  await rm(pidFile, { force: true });
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new TaskError("Internal", `${p.label}: runc wrote no valid pid to ${pidFile} ("${text.trim()}")`);
  }
  return pid;
}
