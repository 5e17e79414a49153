// Everything a benchmark starts is registered here and torn down on the way out: normal end, error, SIGINT or
// SIGTERM. Leaked QEMU processes slow down everyone on a shared machine.

import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { processesMatching, unmountUnder } from "../../testkit/daemon.ts";

type Task = () => Promise<void> | void;
const tasks: Task[] = [];
let running: Promise<void> | undefined;

export function onCleanup(task: Task): void {
  tasks.push(task);
}

/** Runs the registered tasks, newest first; safe to call more than once. */
export function cleanup(): Promise<void> {
  running ??= (async () => {
    while (tasks.length > 0) {
      try {
        await tasks.pop()!();
      } catch (err) {
        console.error(`cleanup: ${(err as Error).message}`);
      }
    }
  })();
  return running;
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: stopping everything this benchmark started`);
    void cleanup().then(() => process.exit(130));
  });
}

/** Runs a benchmark's main; on failure says which benchmark failed, tears down what it started and exits 1. */
export async function runBenchmark(name: string, main: () => Promise<void>): Promise<void> {
  await main().catch(async (err: Error) => {
    console.error(`${name} benchmark failed: ${err.stack ?? err.message}`);
    await cleanup();
    process.exit(1);
  });
}

/** SIGKILLs every process whose command line mentions dir (daemon, QEMU, helpers). */
export function killUnder(dir: string): void {
  for (const pid of processesMatching(dir)) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** A private temporary directory; on cleanup its processes are killed, its mounts detached, and it is removed. */
export async function scratchDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  onCleanup(async () => {
    killUnder(dir);
    // let the kernel reap the killed processes before their mounts and files go
    await new Promise((r) => setTimeout(r, 300));
    unmountUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}
