import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type MethodsOf, type UnaryClient, unaryClient } from "../runtime/grpc/service.ts";
import { TaskExitSchema } from "../runtime/protos/gen/containerd/events/task_pb.ts";
import { Task } from "../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Events } from "../runtime/protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import { Controller } from "../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import type { Envelope } from "../runtime/protos/gen/containerd/types/event_pb.ts";
import { PodSandboxConfigSchema } from "../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { SandboxService } from "../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { dial } from "../runtime/transport/address.ts";
import { TtrpcClient, TtrpcServer } from "../runtime/ttrpc/index.ts";
import {
  busyboxBundle,
  cleanupDaemonDir,
  type Daemon,
  dialTaskApi,
  readFifo,
  startDaemon,
  writeConfig,
} from "./daemon.ts";

/**
 * A tree of files, links and modes outside every sandbox: a host directory an attacker would aim the daemon at.
 * Its digest covers names, types, modes, contents and link targets, so any write, removal or mount shows.
 */
export async function makeCanary(dir: string): Promise<void> {
  for (const d of ["etc", "dir0", "dir1", "bundle-target"]) await mkdir(path.join(dir, d), { recursive: true });
  await writeFile(path.join(dir, "etc/passwd"), "root:x:0:0:canary:/root:/bin/sh\n");
  await writeFile(path.join(dir, "dir0/keep"), "canary 0\n");
  await writeFile(path.join(dir, "dir1/keep"), "canary 1\n");
  await writeFile(path.join(dir, "file"), "canary file\n", { mode: 0o600 });
}

export async function treeDigest(root: string): Promise<string> {
  const h = createHash("sha256");
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p);
    h.update(`${path.relative(root, p)}\0${st.mode}\0${st.size}\0`);
    if (st.isSymbolicLink()) h.update(await readlink(p));
    else if (st.isFile()) h.update(await readFile(p));
    else if (st.isDirectory()) for (const n of (await readdir(p)).sort()) await walk(path.join(p, n));
  };
  await walk(root);
  return h.digest("hex");
}

/**
 * Every mount and unmount in the host's mount namespace while it runs (findmnt --poll wakes on each change of the
 * mount table, so a mount that lasts milliseconds is still seen).
 */
export class MountWatch {
  private proc: ChildProcess;
  private out = "";
  readonly ready: Promise<void>;

  constructor() {
    this.proc = spawn("findmnt", ["--poll", "--noheadings", "--raw", "--output", "ACTION,TARGET"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    this.proc.stdout?.on("data", (d) => {
      this.out += d;
    });
    // findmnt has read the table once it is waiting in poll(): give it a moment to get there.
    this.ready = new Promise((r) => setTimeout(r, 300));
  }

  /** Targets of mount events outside every allowed prefix (findmnt's raw output escapes spaces as \x20). */
  outside(allowed: string[]): string[] {
    return this.out
      .split("\n")
      .filter(Boolean)
      .map((l) => l.trim().split(/\s+/))
      .filter(([action]) => action === "mount" || action === "move" || action === "remount")
      .map(([, target]) => (target ?? "").replace(/\\x20/g, " "))
      .filter((t) => !allowed.some((a) => t === a || t.startsWith(`${a}/`)));
  }

  stop(): void {
    this.proc.kill();
  }
}

/** containerd's ttrpc Events service, as far as the daemon uses it: every forwarded envelope is kept. */
export class EventsSink {
  readonly received: Envelope[] = [];
  private server = new TtrpcServer();
  private listener = net.createServer();

  constructor(readonly socket: string) {
    this.server.register(Events, {
      forward: async (req) => {
        if (req.envelope) this.received.push(req.envelope);
        return {};
      },
    });
    this.server.serve(this.listener);
  }

  async listen(): Promise<void> {
    await rm(this.socket, { force: true });
    await new Promise<void>((r) => this.listener.listen(this.socket, r));
  }

  /** Exit statuses reported for a container; an exit event containerd could not decode counts as -1. */
  exits(containerId: string): number[] {
    return this.received
      .filter((e) => e.topic === "/tasks/exit" && e.event)
      .map((e) => {
        try {
          return fromBinary(TaskExitSchema, e.event!.value);
        } catch {
          return { containerId, exitStatus: -1 };
        }
      })
      .filter((x) => x.containerId === containerId)
      .map((x) => x.exitStatus);
  }

  async close(): Promise<void> {
    await this.server.close();
  }
}

/** Runs a shell command as root inside a sandbox's guest (ExecVMProcess: the guest booted with task.debug). */
export async function guestRoot(sandboxDir: string, command: string): Promise<string> {
  const client = new TtrpcClient(await dial(`hvsock://${sandboxDir}/task.vsock:1024`, { timeoutMs: 5000 }));
  try {
    const r = await client
      .service(SandboxService)
      .execVMProcess({ command, stdin: Buffer.alloc(0) }, { timeoutMs: 60_000 });
    return r.out;
  } finally {
    client.close();
  }
}

/** The daemon's resident memory (VmRSS, KiB). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0);
}

/**
 * A host directory handed to a container as a volume, with a submount of its own and data in both, mounted shared as
 * on every systemd host: what teardown must leave exactly as it was.
 */
export async function makeVolume(
  dir: string,
): Promise<{ dir: string; check: () => Promise<void>; remove: () => void }> {
  await mkdir(path.join(dir, "sub"), { recursive: true });
  execFileSync("mount", ["--bind", dir, dir]);
  execFileSync("mount", ["--make-shared", dir]);
  execFileSync("mount", ["-t", "tmpfs", "volume-sub", path.join(dir, "sub")]);
  await writeFile(path.join(dir, "data"), "volume data\n");
  await writeFile(path.join(dir, "sub/data"), "submount data\n");
  return {
    dir,
    check: async () => {
      const data = await readFile(path.join(dir, "data"), "utf8").catch((e: Error) => `(${e.message})`);
      const sub = await readFile(path.join(dir, "sub/data"), "utf8").catch((e: Error) => `(${e.message})`);
      if (data !== "volume data\n" || sub !== "submount data\n") {
        throw new Error(`volume ${dir} lost data: data=${JSON.stringify(data)} sub/data=${JSON.stringify(sub)}`);
      }
    },
    remove: () => {
      // Already gone when the test's cleanup unmounted everything under its directory.
      spawnSync("umount", ["-R", dir]);
    },
  };
}

/**
 * A container bundle (as containerd writes one) whose spec binds `volume` at /vol and a host file at
 * /dev/termination-log, running `sh -c script`.
 */
export async function bundleWithVolume(dir: string, script: string, volume: string, file: string): Promise<string> {
  const bundle = await busyboxBundle(dir, ["sh", "-c", script]);
  const specFile = path.join(bundle, "config.json");
  const spec = JSON.parse(await readFile(specFile, "utf8")) as { mounts: object[] };
  spec.mounts.push(
    { destination: "/vol", type: "bind", source: volume, options: ["rbind", "rw"] },
    { destination: "/dev/termination-log", type: "bind", source: file, options: ["rbind", "rw"] },
  );
  await writeFile(specFile, JSON.stringify(spec));
  return bundle;
}

/** Creates and starts a container through a sandbox's task API; resolves with its exit status once it exits. */
export async function runTask(
  taskAddress: string,
  id: string,
  bundle: string,
  opts: { timeoutMs?: number; keep?: boolean } = {},
): Promise<{ status: number; stdout: string }> {
  const client = await dialTaskApi(taskAddress);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  try {
    const task = client.service(Task);
    const stdout = path.join(path.dirname(bundle), `${id}.stdout`);
    const output = readFifo(stdout);
    // Wrapped: returning the Wait itself would make this wait for the container's exit.
    const { waiting } = await (async () => {
      await task.create({ id, bundle, stdout }, { timeoutMs });
      const waiting = task.wait({ id }, { timeoutMs });
      await task.start({ id }, { timeoutMs });
      return { waiting };
    })().catch(async (err: Error) => {
      await output.release();
      throw err;
    });
    if (opts.keep) {
      // Left running: the Wait ends with the connection.
      waiting.catch(() => undefined);
      return { status: -1, stdout: "" };
    }
    const { exitStatus } = await waiting;
    const out = await output;
    await task.delete({ id }, { timeoutMs });
    return { status: exitStatus, stdout: out };
  } finally {
    client.close();
  }
}

/**
 * One daemon (from source) with what every attack test checks against: a canary tree outside every sandbox, the
 * host's mount events, containerd's Events endpoint, and a bystander sandbox with the real agent.
 */
export class Scene {
  readonly state: string;
  readonly canary: string;
  readonly events: EventsSink;
  readonly watch: MountWatch;
  daemon!: Daemon;
  controller!: UnaryClient<MethodsOf<typeof Controller>>;
  private closeController = () => {};
  /** Mounts the test itself made (its volumes), allowed beside the sandbox directories. */
  private readonly testMounts: string[] = [];
  private canaryDigest = "";
  private rss0 = 0;
  private runs = 0;

  private constructor(
    readonly dir: string,
    readonly config: string,
  ) {
    this.state = path.join(dir, "state");
    this.canary = path.join(dir, "canary");
    this.events = new EventsSink(path.join(dir, "no-containerd.sock.ttrpc"));
    this.watch = new MountWatch();
  }

  /** edit turns the harness's QEMU config into the test's. */
  static async start(prefix: string, edit: (config: string) => string = (c) => c): Promise<Scene> {
    const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
    const config = path.join(dir, "config.toml");
    await writeConfig(config);
    await writeFile(config, edit(await readFile(config, "utf8")));
    const s = new Scene(dir, config);
    await makeCanary(s.canary);
    s.canaryDigest = await treeDigest(s.canary);
    await s.events.listen();
    await s.watch.ready;
    await s.startDaemon();
    await s.pod("bystander");
    return s;
  }

  /** (Re)starts the daemon on the same state, e.g. after a kill -9; the memory baseline starts again. */
  async startDaemon(): Promise<void> {
    this.daemon = await startDaemon(this.dir, this.config);
    ({ client: this.controller, close: this.closeController } = unaryClient(Controller, `unix://${this.daemon.sock}`));
    this.rss0 = rssKiB(this.daemon.proc.pid!);
  }

  async killDaemon(): Promise<void> {
    this.closeController();
    this.daemon.proc.kill("SIGKILL");
    await new Promise((r) => this.daemon.proc.once("exit", r));
  }

  /** Creates and starts a sandbox whose pod hostname is its id; its task API address. */
  async pod(id: string): Promise<string> {
    await this.controller.create({
      sandboxId: id,
      options: {
        typeUrl: "runtime.v1.PodSandboxConfig",
        value: toBinary(PodSandboxConfigSchema, create(PodSandboxConfigSchema, { hostname: id })),
      },
    });
    return (await this.controller.start({ sandboxId: id })).address;
  }

  /** A host volume (see makeVolume) in the test's directory; its own mounts are not an attack's. */
  async volume(name: string): Promise<Awaited<ReturnType<typeof makeVolume>>> {
    const dir = path.join(this.dir, name);
    this.testMounts.push(dir);
    return makeVolume(dir);
  }

  sandboxDir(id: string): string {
    return path.join(this.state, id);
  }

  /**
   * What no attack may change: nothing outside the sandbox directories (and the given volumes) was written or
   * mounted on, the daemon's memory is bounded, and the bystander sandbox still answers and still runs a container
   * whose exit event reaches containerd. Everything is checked and reported together.
   */
  async assertUnharmed(allowedMounts: string[] = []): Promise<void> {
    const problems: string[] = [];
    const outside = this.watch.outside([this.state, ...this.testMounts, ...allowedMounts]);
    if (outside.length) problems.push(`mounts outside the sandbox directories: ${outside.join(", ")}`);
    if ((await treeDigest(this.canary)) !== this.canaryDigest) problems.push("the host tree (canary) changed");
    const grown = rssKiB(this.daemon.proc.pid!) - this.rss0;
    if (grown > 64 * 1024) problems.push(`the daemon grew by ${grown} KiB`);
    if (this.daemon.proc.exitCode !== null) problems.push(`the daemon exited with ${this.daemon.proc.exitCode}`);
    const status = await this.controller.status({ sandboxId: "bystander" }).catch((e: Error) => e);
    if (status instanceof Error || status.state !== "SANDBOX_READY") {
      problems.push(`the bystander sandbox is ${status instanceof Error ? status.message : status.state}`);
    } else {
      const id = `bystander-run${++this.runs}`;
      const bundle = await busyboxBundle(path.join(this.dir, id), ["sh", "-c", "exit 7"]);
      const r = await runTask(`ttrpc+unix://${path.join(this.sandboxDir("bystander"), "task.sock")}`, id, bundle).catch(
        (e: Error) => e,
      );
      if (r instanceof Error || r.status !== 7) {
        problems.push(`the bystander's container: ${r instanceof Error ? r.message : `exit ${r.status}`}`);
      }
      // The exit event is the guest's, forwarded by the daemon: it may trail the task's Wait.
      for (let i = 0; i < 40 && !this.events.exits(id).includes(7); i++)
        await new Promise((res) => setTimeout(res, 250));
      if (!this.events.exits(id).includes(7)) problems.push(`no exit event for the bystander's ${id}`);
    }
    assert.deepEqual(problems, []);
  }

  async close(): Promise<void> {
    this.watch.stop();
    this.closeController();
    await this.events.close();
    await cleanupDaemonDir(this.daemon, this.dir);
  }
}
