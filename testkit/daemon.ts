import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  closeSync,
  createReadStream,
  existsSync,
  constants as fsConstants,
  openSync,
  readdirSync,
  readFileSync,
} from "node:fs";
import { copyFile, mkdir, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Task } from "../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { TtrpcClient } from "../runtime/ttrpc/index.ts";

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const bin = path.join(repo, "bin");
/** Where the guest kernel comes from: bin/, or KUASAR_KERNEL_DIR to run the VM tests on another build (profile). */
export const kernelDir = process.env.KUASAR_KERNEL_DIR ? path.resolve(process.env.KUASAR_KERNEL_DIR) : bin;
const KERNEL_FILES = new Set(["vmlinux.bin", "bzImage", "vmlinux.manifest.json"]);

/** Where an artifact is read from: the kernel's files from kernelDir, the rest from bin/. */
export function artifact(name: string): string {
  return path.join(KERNEL_FILES.has(name) ? kernelDir : bin, name);
}

/** VM tests need the pipeline's artifacts; missing ones fail the test with what to run (no silent skip). */
export function requireArtifacts(names = ["vmlinux.bin", "kuasar.img", "vsock.node"]): void {
  const missing = names.map(artifact).filter((f) => !existsSync(f));
  if (missing.length) {
    throw new Error(`missing ${missing.join(", ")}: run \`make all\` (or npm test, which builds first)`);
  }
}

/** A QEMU config for the built artifacts; extra lines go into [hypervisor]. */
export async function writeConfig(file: string, extra = ""): Promise<void> {
  await writeFile(
    file,
    `[sandbox]\nlog_level = "debug"\ncontainerd_address = "${path.dirname(file)}/no-containerd.sock"\n\n` +
      `[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\nvcpus = 1\nmemory_in_mb = 512\n` +
      `kernel_path = "${artifact("vmlinux.bin")}"\nimage_path = "${bin}/kuasar.img"\n${extra}`,
  );
}

export interface Daemon {
  proc: ChildProcess;
  sock: string;
  log: () => string;
}

/** Runs vmm-sandboxer from source (the code under test) and waits for its socket. */
export async function startDaemon(dir: string, config: string): Promise<Daemon> {
  const sock = path.join(dir, "vmm-sandboxer.sock");
  let out = "";
  const proc = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      path.join(repo, "runtime/sandboxer/main.ts"),
      "-c",
      config,
      "-d",
      path.join(dir, "state"),
      "-l",
      sock,
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        KUASAR_VSOCK_ADDON: path.join(bin, "vsock.node"),
        KUASAR_NS_ADDON: path.join(bin, "ns.node"),
      },
    },
  );
  proc.stdout?.on("data", (d) => {
    out += d;
  });
  proc.stderr?.on("data", (d) => {
    out += d;
  });
  const until = Date.now() + 20_000;
  while (!out.includes("serving the sandbox API")) {
    if (proc.exitCode !== null) throw new Error(`vmm-sandboxer exited with ${proc.exitCode}:\n${out}`);
    if (Date.now() > until) throw new Error(`vmm-sandboxer did not come up within 20 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, sock, log: () => out };
}

/** A busybox container bundle the way containerd lays one out (spec with a host rootfs path). */
export async function busyboxBundle(dir: string, args: string[]): Promise<string> {
  const rootfs = path.join(dir, "rootfs");
  if (!existsSync(rootfs)) {
    await mkdir(path.join(rootfs, "bin"), { recursive: true });
    for (const d of ["proc", "sys", "dev", "tmp", "etc"]) await mkdir(path.join(rootfs, d));
    await copyFile("/bin/busybox", path.join(rootfs, "bin/busybox"));
    for (const a of ["sh", "echo", "uname", "cat", "hostname", "sleep", "ls"]) {
      await symlink("busybox", path.join(rootfs, "bin", a));
    }
  }
  const bundle = path.join(dir, `bundle-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(bundle);
  await writeFile(
    path.join(bundle, "config.json"),
    JSON.stringify({
      ociVersion: "1.0.2",
      process: { args, env: ["PATH=/bin"], cwd: "/", user: { uid: 0, gid: 0 } },
      root: { path: rootfs },
      mounts: [
        { destination: "/proc", type: "proc", source: "proc" },
        { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"] },
      ],
      linux: {
        namespaces: [{ type: "pid" }, { type: "mount" }, { type: "ipc", path: "/proc/1/ns/ipc" }],
        cgroupsPath: `/kuasar-vm-test/${path.basename(bundle)}`,
      },
    }),
  );
  return bundle;
}

/** Pids of processes whose command line mentions needle (leak checks). */
export function processesMatching(needle: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "utf8").includes(needle)) out.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** After a failed test the killed daemon leaves container mounts in the share: detach them before removing dir. */
export function unmountUnder(dir: string): void {
  const points = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m.startsWith(dir))
    .sort((a, b) => b.length - a.length);
  for (const m of points) spawnSync("umount", ["-l", m]);
}

/** After a test file: the daemon, every process whose command line names dir (VMs, helpers), mounts below dir, dir. */
export async function cleanupDaemonDir(daemon: Daemon | undefined, dir: string | undefined): Promise<void> {
  daemon?.proc.kill("SIGKILL");
  if (!dir) return;
  for (const pid of processesMatching(dir)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  unmountUnder(dir);
  await rm(dir, { recursive: true, force: true });
}

/** A ttrpc client on a sandbox's task API address (ttrpc+unix://...), as containerd dials it. */
export async function dialTaskApi(taskAddress: string): Promise<TtrpcClient> {
  const conn = net.connect(taskAddress.replace(/^ttrpc\+unix:\/\//, ""));
  await new Promise((r, j) => conn.once("connect", r).once("error", j));
  return new TtrpcClient(conn);
}

/** A FIFO's content once its writers are done; release() ends the read when no writer is coming. */
export type FifoOutput = Promise<string> & { release(): Promise<void> };

/** Makes a FIFO at file and reads it to its end: a container's stdout as containerd hands it over. */
export function readFifo(file: string): FifoOutput {
  execFileSync("mkfifo", [file]);
  let out = "";
  let opened = false;
  const stream = createReadStream(file).once("open", () => {
    opened = true;
  });
  const output = new Promise<string>((resolve) =>
    stream
      .on("data", (d) => {
        out += d;
      })
      .on("end", () => resolve(out))
      .on("close", () => resolve(out)),
  );
  // The reader's open() waits in libuv's threadpool for a writer; if none is coming (the call that would have opened
  // the other end failed), it would keep the test process alive forever. Opening the FIFO read-write never blocks
  // and counts as that writer; closing it then gives the reader its EOF.
  const release = async () => {
    if (!opened) {
      const fd = openSync(file, fsConstants.O_RDWR);
      await once(stream, "open");
      closeSync(fd);
    }
    stream.destroy();
    await output;
  };
  return Object.assign(output, { release });
}

/** Runs `sh -c script` as a container through a sandbox's task API (as containerd would); its stdout and status. */
export async function runContainer(
  dir: string,
  taskAddress: string,
  id: string,
  script: string,
): Promise<{ out: string; status: number }> {
  const client = await dialTaskApi(taskAddress);
  try {
    const task = client.service(Task);
    const stdout = path.join(dir, `${id}.stdout`);
    const output = readFifo(stdout);
    // A bundle of its own, removed afterwards: dir may be shared by many containers.
    const bundle = await busyboxBundle(path.join(dir, `bundle-${id}`), ["sh", "-c", script]);
    const { exitStatus } = await (async () => {
      await task.create({ id, bundle, stdout });
      const waiting = task.wait({ id });
      await task.start({ id });
      return await waiting;
    })().catch(async (err: Error) => {
      await output.release();
      throw err;
    });
    const out = await output;
    await task.delete({ id });
    await rm(stdout, { force: true });
    await rm(bundle, { recursive: true, force: true });
    return { out, status: exitStatus };
  } finally {
    client.close();
  }
}
