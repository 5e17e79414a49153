import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { addUnaryService, type MethodsOf, type UnaryClient, unaryClient } from "../runtime/grpc/service.ts";
import { logger, setLogLevel } from "../runtime/log/log.ts";
import { Controller } from "../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { controllerHandlers } from "../runtime/sandboxer/controller.ts";
import { SandboxManager } from "../runtime/sandboxer/sandbox/manager.ts";
import type { ExitInfo, Launcher, SandboxRecord } from "../runtime/sandboxer/sandbox/record.ts";
import { processesMatching } from "./daemon.ts";
import { rng } from "./rng.ts";

export { runContainer } from "./daemon.ts";
export { rng };

export type ControllerClient = UnaryClient<MethodsOf<typeof Controller>>;

/**
 * A launcher whose "VMs" live for random short times: start, stop and release take a few ms each so that requests
 * on one id really interleave. It counts what a leak would be: VMs started and never released.
 */
export class FakeLauncher implements Launcher {
  readonly vms = new Map<string, { resolve: (e: ExitInfo) => void; exited: Promise<ExitInfo> }>();
  started = 0;
  released = 0;
  constructor(
    private readonly random: () => number,
    private readonly maxDelayMs = 3,
  ) {}
  private pause(): Promise<void> {
    return sleep(Math.floor(this.random() * (this.maxDelayMs + 1)));
  }
  async prepare(_rec: SandboxRecord, dir: string): Promise<void> {
    await this.pause();
    await mkdir(path.join(dir, "shared"));
  }
  async start(rec: SandboxRecord, dir: string) {
    await this.pause();
    if (this.vms.has(rec.id)) throw new Error(`fake launcher: ${rec.id} already has a running VM`);
    let resolve!: (e: ExitInfo) => void;
    const exited = new Promise<ExitInfo>((r) => {
      resolve = r;
    });
    this.vms.set(rec.id, { resolve, exited });
    this.started++;
    return { pid: 4242, taskAddress: `ttrpc+unix://${dir}/task.sock`, runtime: {} };
  }
  waitExit(rec: SandboxRecord): Promise<ExitInfo> {
    const vm = this.vms.get(rec.id);
    if (!vm) return Promise.reject(new Error(`fake launcher: ${rec.id} has no VM`));
    return vm.exited;
  }
  async stop(rec: SandboxRecord): Promise<void> {
    await this.pause();
    this.vms.get(rec.id)?.resolve({ exitStatus: 0, exitedAt: new Date() });
  }
  async release(rec: SandboxRecord): Promise<void> {
    await this.pause();
    if (this.vms.delete(rec.id)) this.released++;
  }
  async stats() {
    return undefined;
  }
  async update() {}
  async recover() {
    return { ok: true as const };
  }
  async discard() {}
}

/** The Controller over a real gRPC unix socket, backed by a SandboxManager on a FakeLauncher. */
export async function fakeDaemon(dir: string, launcher: Launcher) {
  setLogLevel("error");
  const manager = new SandboxManager(path.join(dir, "state"), launcher, logger("reliability"));
  const server = new grpc.Server();
  addUnaryService(server, Controller, controllerHandlers(manager, "test"));
  const sock = path.join(dir, "controller.sock");
  await new Promise<void>((res, rej) =>
    server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
  );
  const { client, close } = unaryClient(Controller, `unix://${sock}`);
  return {
    manager,
    sock,
    client,
    close: () => {
      close();
      server.forceShutdown();
    },
  };
}

/** Every sandbox.json under stateDir, parsed (a torn or unparsable one throws, naming the file). */
export async function recordsOnDisk(stateDir: string): Promise<Map<string, SandboxRecord>> {
  const out = new Map<string, SandboxRecord>();
  for (const id of await readdir(stateDir).catch(() => [] as string[])) {
    const file = path.join(stateDir, id, "sandbox.json");
    const text = await readFile(file, "utf8");
    try {
      out.set(id, JSON.parse(text) as SandboxRecord);
    } catch (err) {
      throw new Error(`${file} is not valid JSON (${(err as Error).message}):\n${text.slice(0, 400)}`);
    }
  }
  return out;
}

const STATE_OF: Record<string, SandboxRecord["state"][]> = {
  SANDBOX_READY: ["running"],
  SANDBOX_NOTREADY: ["created", "stopped"],
};

/** Status of every id agrees with its sandbox.json: same existence, state and pid. Returns what disagrees. */
export async function statusVersusDisk(client: ControllerClient, stateDir: string, ids: Iterable<string>) {
  const disk = await recordsOnDisk(stateDir);
  const problems: string[] = [];
  for (const id of ids) {
    const st = await client.status({ sandboxId: id }).catch((e: grpc.ServiceError) => e);
    const rec = disk.get(id);
    if (st instanceof Error) {
      if (st.code !== grpc.status.NOT_FOUND) problems.push(`${id}: Status failed: ${st.message}`);
      else if (rec) problems.push(`${id}: Status says NOT_FOUND, sandbox.json says ${rec.state}`);
      continue;
    }
    if (!rec) problems.push(`${id}: Status says ${st.state}, no sandbox.json`);
    else if (!STATE_OF[st.state]?.includes(rec.state)) problems.push(`${id}: Status ${st.state}, disk ${rec.state}`);
    else if (rec.state === "running" && rec.pid !== st.pid)
      problems.push(`${id}: Status pid ${st.pid}, disk ${rec.pid}`);
  }
  return problems;
}

/** What a leak would show: the daemon's fds, processes naming stateDir, mounts under it, kuasar taps, netns. */
export function footprint(daemonPid: number, stateDir: string) {
  return {
    fds: readdirSync(`/proc/${daemonPid}/fd`).length,
    procs: processesMatching(stateDir).length,
    mounts: readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => l.split(" ")[4]?.startsWith(stateDir)).length,
    taps: execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes("tap_kua")).length,
    netns: execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n").filter(Boolean).length,
    files: countFiles(stateDir),
  };
}

function countFiles(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    n += e.isDirectory() ? 1 + countFiles(path.join(dir, e.name)) : 1;
  }
  return n;
}

/** The daemon's fd count settles a moment after the last call (gRPC streams close asynchronously). */
export async function settledFds(pid: number, target: number, ms = 5000): Promise<number> {
  const until = Date.now() + ms;
  let n = readdirSync(`/proc/${pid}/fd`).length;
  while (n > target && Date.now() < until) {
    await sleep(100);
    n = readdirSync(`/proc/${pid}/fd`).length;
  }
  return n;
}

/** A tmpfs of sizeKiB at dir (for disk-full tests); the returned function unmounts it. */
export function mountTmpfs(dir: string, sizeKiB: number): () => void {
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${sizeKiB}k,mode=0755`, "tmpfs", dir], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`mount -t tmpfs on ${dir} failed (needs root): ${r.stderr}`);
  return () => {
    spawnSync("umount", ["-l", dir]);
  };
}
