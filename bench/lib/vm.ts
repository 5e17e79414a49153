// Shared machinery of the VM benchmarks: the shipped daemon (bin/vmm-sandboxer), the timestamps of its log lines,
// the guest's serial console watched from the host, and questions to the guest agent.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { open, readdir } from "node:fs/promises";
import path from "node:path";
import { AGENT_PORT } from "../../runtime/contract/ports.ts";
import { showsAgentReady } from "../../runtime/contract/readiness.ts";
import { SandboxService } from "../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { dial } from "../../runtime/transport/address.ts";
import { TtrpcClient } from "../../runtime/ttrpc/index.ts";
import { bin } from "../../testkit/daemon.ts";
import { onCleanup } from "./cleanup.ts";

export interface BundledDaemon {
  proc: ChildProcess;
  sock: string;
  stateDir: string;
  log: () => string;
}

/**
 * Runs the shipped daemon (bin/vmm-sandboxer on bin/node, the runtime install-vmm gives it) with `-d <dir>/state`;
 * resolves once it serves. Its log is kept in memory for the phase timestamps; `flags` are added to its command line;
 * `daemonBin` runs another build of the daemon on the same runtime.
 */
export async function startBundledDaemon(
  dir: string,
  config: string,
  flags: string[] = [],
  daemonBin = path.join(bin, "vmm-sandboxer"),
): Promise<BundledDaemon> {
  if (!existsSync(daemonBin)) throw new Error(`${daemonBin} is missing: run \`node pipeline/bin/kuasar-build.js all\``);
  const sock = path.join(dir, "vmm-sandboxer.sock");
  const stateDir = path.join(dir, "state");
  let out = "";
  const node = existsSync(path.join(bin, "node")) ? path.join(bin, "node") : process.execPath;
  const proc = spawn(node, [daemonBin, "-c", config, "-d", stateDir, "-l", sock, ...flags], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, KUASAR_VSOCK_ADDON: path.join(bin, "vsock.node") },
  });
  onCleanup(() => {
    proc.kill("SIGKILL");
  });
  const collect = (d: Buffer) => {
    out += d;
  };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  const until = Date.now() + 20_000;
  while (!out.includes("serving the sandbox API")) {
    if (proc.exitCode !== null) throw new Error(`vmm-sandboxer exited with ${proc.exitCode}:\n${out}`);
    if (Date.now() > until) throw new Error(`vmm-sandboxer did not come up within 20 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, sock, stateDir, log: () => out };
}

/** The version of the node the shipped daemon runs on (bin/node), or of this process's when there is none. */
export function daemonNodeVersion(): string {
  const node = path.join(bin, "node");
  return existsSync(node) ? execFileSync(node, ["--version"], { encoding: "utf8" }).trim() : process.version;
}

export interface ProcMemory {
  /** Proportional set size: private pages plus a share of each page mapped by other processes too. */
  pss: number;
  rss: number;
  /** Unique set size (Private_Clean + Private_Dirty): what only this process holds, whatever else runs. */
  uss: number;
}

/** A process's memory from /proc/<pid>/smaps_rollup, in bytes; zeros once it is gone. */
export function procMemory(pid: number): ProcMemory {
  let text = "";
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  } catch {
    // gone
  }
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { pss: kb("Pss"), rss: kb("Rss"), uss: kb("Private_Clean") + kb("Private_Dirty") };
}

/** user + system CPU time of a process so far, µs (/proc/<pid>/stat, clock ticks of 10 ms). */
export function procCpuUs(pid: number): number {
  const rest = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(rest[11]) + Number(rest[12])) * 10_000;
}

/**
 * CPU time the whole machine has spent busy so far, ms, all cores summed (/proc/stat's first line: every state but
 * idle and iowait, in clock ticks of 10 ms). It counts every process, ours and anyone else's.
 */
export function machineBusyMs(): number {
  const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/);
  const n = ticks.map(Number);
  return (n.reduce((a, b) => a + b, 0) - n[3]! - n[4]!) * 10;
}

/** When the daemon logged each step of one sandbox's Create and Start (ms since the epoch, its own clock). */
export interface DaemonSteps {
  created?: number;
  /** Start: the first helper (vhost-device-vsock) is about to be spawned: config, probes and the plan are done. */
  helper?: number;
  /** Start: QEMU is about to be spawned. */
  vmm?: number;
  /** Start: QEMU's QMP socket answered. */
  vmmUp?: number;
  /** Start: the guest agent answered Check. */
  agent?: number;
  /** Start: SetupSandbox, the task API and the first clock sync are done. */
  running?: number;
}

const LINE = /^\[(\S+) \w+ ([^\]]+)\] (.*)$/;

/** Reads the steps of sandbox `id` out of the daemon's log (debug level, for the helper line). */
export function daemonSteps(log: string, id: string): DaemonSteps {
  const steps: DaemonSteps = {};
  const vmTarget = `vmm_sandboxer::vm::${id}`;
  for (const line of log.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const [, time, target, msg] = m as unknown as [string, string, string, string];
    const t = Date.parse(time);
    if (target === "vmm_sandboxer::sandbox") {
      if (msg.startsWith(`sandbox ${id} created`)) steps.created = t;
      else if (msg.startsWith(`sandbox ${id} running`)) steps.running = t;
    } else if (target === vmTarget || target.startsWith(`${vmTarget}::`)) {
      // The daemon names the helper's own uid when it runs it as one (helper_uid_base).
      if (/^starting vhost-device-vsock( as uid \d+)?:/.test(msg)) steps.helper ??= t;
      else if (msg.startsWith("starting qemu:")) steps.vmm ??= t;
      else if (/^vmm pid \d+ started/.test(msg)) steps.vmmUp = t;
      else if (msg.startsWith("agent answered")) steps.agent = t;
    }
  }
  return steps;
}

const shows = (needle: string) => (text: string) => text.includes(needle);

/** What on the guest's serial console marks each boot stage. */
export const CONSOLE_MARKS = {
  /** SeaBIOS's banner: QEMU is running guest code. */
  firmware: shows("SeaBIOS"),
  /** The kernel's first line. */
  kernel: shows("Linux version"),
  /** The kernel hands over to the init. */
  init: shows("Run /sbin/init"),
  /** vmm-task listens on vsock (the line the daemon waits for before dialling). */
  agent: showsAgentReady,
} as const;
export type ConsoleMark = keyof typeof CONSOLE_MARKS;
export type ConsoleTimes = Partial<Record<ConsoleMark, number>>;

/** Follows one console.log, stamping (host clock) when each mark first appears. */
class ConsoleFollower {
  readonly seen: ConsoleTimes = {};
  private offset = 0;
  private carry = "";

  constructor(readonly file: string) {}

  get done(): boolean {
    return this.seen.agent !== undefined;
  }

  async poll(): Promise<void> {
    const fh = await open(this.file, "r").catch(() => undefined);
    if (!fh) return;
    try {
      const { size } = await fh.stat();
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      await fh.read(buf, 0, buf.length, this.offset);
      this.offset = size;
      const now = Date.now();
      const text = this.carry + buf.toString("latin1");
      for (const [mark, seen] of Object.entries(CONSOLE_MARKS) as Array<[ConsoleMark, (text: string) => boolean]>) {
        if (this.seen[mark] === undefined && seen(text)) this.seen[mark] = now;
      }
      // keep enough of the tail for a mark split across two reads
      this.carry = text.slice(-64);
    } finally {
      await fh.close();
    }
  }
}

/**
 * Watches every sandbox directory under a daemon's state dir (or one directory given directly) and the serial
 * console in each, polling every 20 ms.
 */
export class ConsoleWatch {
  private followers = new Map<string, ConsoleFollower>();
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(private readonly stateDir: string) {}

  start(): this {
    this.timer = setInterval(() => void this.tick(), 20);
    onCleanup(() => this.stop());
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Marks seen so far for sandbox id (the name of its directory under stateDir). */
  times(id: string): ConsoleTimes {
    return { ...this.followers.get(id)?.seen };
  }

  /** Follows a console file that is not under stateDir (the bare-QEMU floor). */
  follow(id: string, file: string): void {
    this.followers.set(id, new ConsoleFollower(file));
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const id of await readdir(this.stateDir).catch(() => [] as string[])) {
        if (!this.followers.has(id))
          this.followers.set(id, new ConsoleFollower(path.join(this.stateDir, id, "console.log")));
      }
      await Promise.all([...this.followers.values()].filter((f) => !f.done).map((f) => f.poll()));
    } finally {
      this.busy = false;
    }
  }
}

/** Runs a shell command in the guest through the agent's ExecVMProcess, over a connection of its own. */
export async function guestExec(agentUds: string, command: string): Promise<string> {
  const client = new TtrpcClient(await dial(`hvsock://${agentUds}:${AGENT_PORT}`, { timeoutMs: 5000 }));
  try {
    return (await client.service(SandboxService).execVMProcess({ command }, { timeoutMs: 60_000 })).out;
  } finally {
    client.close();
  }
}

export interface AgentMemory {
  /** VmRSS and VmHWM of vmm-task, bytes. */
  rss: number;
  hwm: number;
  pss: number;
  /** The guest's /proc/uptime when it was read, and the host time then (ms since the epoch). */
  uptimeS: number;
  hostAt: number;
  /** vmm-task's command line, to show what was measured. */
  cmdline: string;
}

/**
 * vmm-task's memory as the guest sees it. ExecVMProcess runs `sh -c` as vmm-task's own child, so $PPID is vmm-task.
 */
export async function agentMemory(agentUds: string): Promise<AgentMemory> {
  const out = await guestExec(
    agentUds,
    'cat /proc/uptime; grep -E "^Vm(RSS|HWM):" /proc/$PPID/status; grep "^Pss:" /proc/$PPID/smaps_rollup; ' +
      'echo "cmdline: $(tr "\\0" " " < /proc/$PPID/cmdline)"',
  );
  const hostAt = Date.now();
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(out);
    if (!m) throw new Error(`the guest did not report ${key} of vmm-task; it answered:\n${out}`);
    return Number(m[1]) * 1024;
  };
  return {
    rss: kb("VmRSS"),
    hwm: kb("VmHWM"),
    pss: kb("Pss"),
    uptimeS: Number(out.split(/\s/)[0]),
    hostAt,
    cmdline: /^cmdline: (.*)$/m.exec(out)?.[1]?.trim() ?? "",
  };
}
