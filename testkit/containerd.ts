import { type ChildProcess, execFile, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, readlinkSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type MethodsOf, type UnaryClient, unaryClient } from "../runtime/grpc/service.ts";
import { ImageService, RuntimeService } from "../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { artifact, bin, type Daemon, processesMatching, requireArtifacts, startDaemon } from "./daemon.ts";
import { busyboxImageArchive } from "./image.ts";

const run = promisify(execFile);

export const IMAGE = "docker.io/library/kuasar-busybox:e2e";
export const RUNTIME_HANDLER = "kuasar-vmm";
export const STREAMING_HANDLER = "kuasar-vmm-streaming";

/** The e2e tests need a real containerd 2.1 and the VM tooling; missing ones fail with what to install. */
function requireTools(): void {
  requireArtifacts(["vmlinux.bin", "kuasar.img", "vsock.node", "vmm-sandboxer", SHIM]);
  const tools: Array<[string, string]> = [
    ["/usr/bin/containerd", "containerd 2.1 (Debian sid's containerd, see scripts/install-prereqs.sh)"],
    ["/usr/bin/ctr", "ctr (ships with containerd)"],
    ["/usr/bin/qemu-system-x86_64", "qemu-system-x86"],
    ["/usr/bin/vhost-device-vsock", "vhost-device-vsock (Debian sid)"],
  ];
  const missing = tools.filter(([p]) => !existsSync(p)).map(([p, what]) => `${p}: install ${what}`);
  if (missing.length) throw new Error(`e2e prerequisites missing:\n  ${missing.join("\n  ")}`);
}

export type Runtime = UnaryClient<MethodsOf<typeof RuntimeService>>;
export type Images = UnaryClient<MethodsOf<typeof ImageService>>;

export interface Env {
  /** Private root: containerd's root/state/sockets, the daemon's state, pod logs. Kept short (unix socket paths). */
  dir: string;
  /** The daemon's per-sandbox state directory (<dir>/state/<sandbox id>). */
  sandboxDir: (id: string) => string;
  runtime: Runtime;
  images: Images;
  daemon: Daemon;
  /** SIGTERM to containerd, then a fresh one on the same root and state; the CRI clients reconnect. */
  restartContainerd: () => Promise<void>;
  /** kill -9 of vmm-sandboxer, then a fresh one on the same state directory (it recovers the pods). */
  restartDaemon: () => Promise<void>;
  /** The CNI bridge pods without host networking attach to, and its gateway address (the host side). */
  cni: { bridge: string; gateway: string; subnet: string };
  /** containerd's and the daemon's logs, tails of each, for failure messages. */
  logs: (lines?: number) => string;
  teardown: () => Promise<void>;
}

/** The snapshotters the kuasar runtime handler can be given: overlayfs (the default) or a block one. */
export type Snapshotter = "overlayfs" | "blockfile";

export interface EnvOptions {
  /** The snapshotter of the kuasar-vmm runtime handler; the image is unpacked into it too. */
  snapshotter?: Snapshotter;
}

/** The blockfile snapshotter's empty image, which it copies for every snapshot without a parent. */
export const BLOCKFILE_SCRATCH_MIB = 64;

function blockfileConfig(dir: string): string {
  return `
[plugins.'io.containerd.snapshotter.v1.blockfile']
  root_path = "${dir}/containerd/blockfile"
  scratch_file = "${dir}/blockfile-scratch.img"
  fs_type = "ext4"
  recreate_scratch = true
`;
}

function containerdConfig(dir: string, daemonSock: string, snapshotter: Snapshotter = "overlayfs"): string {
  const cri = "plugins.'io.containerd.cri.v1.runtime'";
  const blockfile = snapshotter === "blockfile";
  return `version = 3
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
# Nothing here uses these; skipping them makes startup quicker and the log quieter.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",${blockfile ? "" : '\n  "io.containerd.snapshotter.v1.blockfile",'}
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.differ.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "${dir}/containerd.sock"

[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"

[proxy_plugins.vmm]
  type = "sandbox"
  address = "${daemonSock}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # The pause image is never run by a remote sandboxer, but CRI resolves it: point it at the local image.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${IMAGE}"

[${cri}]
  enable_cdi = false
  [${cri}.cni]
    bin_dirs = ["${dir}/cni/bin"]
    conf_dir = "${dir}/cni/net.d"
  [${cri}.containerd]
    default_runtime_name = "${RUNTIME_HANDLER}"
  # No [...options] table: with a non-runc runtime_type containerd fails to unmarshal it at StartContainer.
  [${cri}.containerd.runtimes.${RUNTIME_HANDLER}]
    runtime_type = "io.containerd.kuasar-vmm.v1"
    sandboxer = "vmm"
    io_type = "fifo"
    snapshotter = "${snapshotter}"
  # The same runtime with stdio carried by containerd's Streaming service on the sandbox's task API.
  [${cri}.containerd.runtimes.${STREAMING_HANDLER}]
    runtime_type = "io.containerd.kuasar-vmm.v1"
    sandboxer = "vmm"
    io_type = "streaming"
    snapshotter = "overlayfs"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
${blockfile ? blockfileConfig(dir) : ""}`;
}

// containerd derives containerd-shim-kuasar-vmm-v1 from runtime_type and, after a restart, drops every task whose
// shim binary it cannot resolve on PATH: the built helper is put there, as install-vmm puts it in /usr/local/bin.
const SHIM = "containerd-shim-kuasar-vmm-v1";

/** Debian's containernetworking-plugins. */
const CNI_PLUGINS = "/usr/lib/cni";

/**
 * A bridge network private to this run (its own bridge and /24, no masquerading, so no iptables): what a node's
 * CNI gives a pod without host networking.
 */
async function setupCni(dir: string, env: Env): Promise<void> {
  for (const plugin of ["bridge", "host-local", "loopback"]) {
    const src = path.join(CNI_PLUGINS, plugin);
    if (!existsSync(src)) throw new Error(`${src} is missing: install containernetworking-plugins`);
    await symlink(src, path.join(dir, "cni/bin", plugin));
  }
  const n = process.pid % 200;
  const cni = { bridge: `kve2e${process.pid % 100000}`, gateway: `10.234.${n}.1`, subnet: `10.234.${n}.0/24` };
  const conflist = {
    cniVersion: "1.0.0",
    name: "kuasar-e2e",
    plugins: [
      {
        type: "bridge",
        bridge: cni.bridge,
        isGateway: true,
        ipMasq: false,
        ipam: { type: "host-local", ranges: [[{ subnet: cni.subnet }]], routes: [{ dst: "0.0.0.0/0" }] },
      },
    ],
  };
  await writeFile(path.join(dir, "cni/net.d/10-kuasar-e2e.conflist"), JSON.stringify(conflist, null, 2));
  env.cni = cni;
}

function daemonConfig(dir: string): string {
  return (
    `[sandbox]\nlog_level = "debug"\ncontainerd_address = "${dir}/containerd.sock"\n\n` +
    `[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\nvcpus = 1\nmemory_in_mb = 512\n` +
    `kernel_path = "${artifact("vmlinux.bin")}"\nimage_path = "${bin}/kuasar.img"\n`
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function ctr(dir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("ctr", ["--address", `${dir}/containerd.sock`, ...args], {
    timeout: 60_000,
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** Mount points at or below dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  const points = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4]?.replace(/\\040/g, " "))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)));
  return points.sort((a, b) => b.length - a.length);
}

/** Container storage mounted in a sandbox's share (storage<N> in the host's tree or the guest's view). */
export function storageMountsUnder(sandboxDir: string): string[] {
  return mountsUnder(sandboxDir).filter((m) => /\/storage\d+(\/|$)/.test(m));
}

/** QEMU, vhost-device-vsock and virtiofsd processes whose command line mentions needle. */
export function vmProcesses(needle: string): number[] {
  return processesMatching(needle).filter((pid) => {
    try {
      return /qemu|vhost-device-vsock|virtiofsd/.test(path.basename(readlinkSync(`/proc/${pid}/exe`)));
    } catch {
      return false;
    }
  });
}

function waitExit(proc: ChildProcess, ms: number): Promise<boolean> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    proc.once("exit", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function stop(proc: ChildProcess | undefined, ms: number): Promise<void> {
  if (!proc) return;
  proc.kill("SIGTERM");
  if (!(await waitExit(proc, ms))) {
    proc.kill("SIGKILL");
    await waitExit(proc, 5000);
  }
}

/**
 * A private containerd (CRI, the vmm proxy sandboxer) and vmm-sandboxer from source, with the busybox image imported.
 * Nothing touches /etc/containerd or /run/containerd.
 */
export async function startEnv(opts: EnvOptions = {}): Promise<Env> {
  requireTools();
  if (opts.snapshotter === "blockfile" && !existsSync("/usr/sbin/mkfs.ext4")) {
    throw new Error("the blockfile snapshotter's scratch image needs /usr/sbin/mkfs.ext4: install e2fsprogs");
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "ke-"));
  const containerdLog = path.join(dir, "containerd.log");
  const config = path.join(dir, "containerd.toml");
  const sock = path.join(dir, "containerd.sock");
  const daemonToml = path.join(dir, "vmm-sandboxer.toml");
  let containerd: ChildProcess | undefined;
  let clients: Array<() => void> = [];
  // Filled in as the parts come up; restartContainerd swaps the CRI clients in place.
  const env = { dir, sandboxDir: (id: string) => path.join(dir, "state", id) } as Env;

  const logs = (lines = 60) =>
    `--- containerd log (${containerdLog}), last ${lines} lines:\n${tail(containerdLog, lines)}\n` +
    `--- vmm-sandboxer log, last ${lines} lines:\n${(env.daemon?.log() ?? "").split("\n").slice(-lines).join("\n")}`;

  const connect = () => {
    const r = unaryClient(RuntimeService, `unix://${sock}`);
    const i = unaryClient(ImageService, `unix://${sock}`);
    env.runtime = r.client;
    env.images = i.client;
    clients = [r.close, i.close];
  };

  const startContainerd = async () => {
    const fd = openSync(containerdLog, "a");
    containerd = spawn("/usr/bin/containerd", ["--config", config, "--log-level", "debug"], {
      stdio: ["ignore", fd, fd],
      env: { ...process.env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}` },
    });
    closeSync(fd);
    const until = Date.now() + 30_000;
    for (;;) {
      if (containerd.exitCode !== null) throw new Error(`containerd exited with ${containerd.exitCode}\n${logs()}`);
      if (Date.now() > until)
        throw new Error(`containerd did not show the vmm sandbox controller within 30 s\n${logs()}`);
      if (existsSync(sock)) {
        const plugins = await ctr(dir, "plugins", "ls").catch(() => "");
        if (/io\.containerd\.sandbox\.controller\.v1\s+vmm\s+.*\bok\b/.test(plugins)) break;
      }
      await sleep(250);
    }
    connect();
    // CRI serves once its plugin is up; Version answering means RuntimeService is reachable.
    for (;;) {
      try {
        await env.runtime.version({}, { deadlineMs: 2000 });
        return;
      } catch (err) {
        if (Date.now() > until) throw new Error(`CRI did not answer within 30 s: ${(err as Error).message}\n${logs()}`);
        await sleep(250);
      }
    }
  };

  const teardown = async () => {
    if (env.runtime && containerd?.exitCode === null) {
      const opts = { deadlineMs: 60_000 };
      const pods = await env.runtime.listPodSandbox({}, opts).catch(() => ({ items: [] }));
      for (const p of pods.items) {
        await env.runtime.stopPodSandbox({ podSandboxId: p.id }, opts).catch(() => undefined);
        await env.runtime.removePodSandbox({ podSandboxId: p.id }, opts).catch(() => undefined);
      }
    }
    for (const close of clients) close();
    await stop(containerd, 15_000);
    await stop(env.daemon?.proc, 15_000);
    for (const pid of processesMatching(dir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const m of mountsUnder(dir)) await run("umount", ["-l", m]).catch(() => undefined);
    if (env.cni) await run("ip", ["link", "del", env.cni.bridge]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await mkdir(path.join(dir, "cni/bin"), { recursive: true });
    await mkdir(path.join(dir, "cni/net.d"), { recursive: true });
    await setupCni(dir, env);
    await mkdir(path.join(dir, "bin"));
    await symlink(path.join(bin, SHIM), path.join(dir, "bin", SHIM));
    await writeFile(daemonToml, daemonConfig(dir));
    env.daemon = await startDaemon(dir, daemonToml);
    if (opts.snapshotter === "blockfile") {
      // An empty ext4 image: every container's rootfs starts as a copy of it with the image's layers applied.
      const scratch = path.join(dir, "blockfile-scratch.img");
      await run("truncate", ["-s", `${BLOCKFILE_SCRATCH_MIB}M`, scratch]);
      await run("mkfs.ext4", ["-q", "-F", scratch]);
    }
    await writeFile(config, containerdConfig(dir, env.daemon.sock, opts.snapshotter));
    await startContainerd();
    const archive = path.join(dir, "busybox-oci.tar");
    await writeFile(archive, await busyboxImageArchive(IMAGE));
    await ctr(dir, "-n", "k8s.io", "images", "import", "--local", archive);
    if (opts.snapshotter && opts.snapshotter !== "overlayfs") {
      // Unpacked now, not at the first CreateContainer: containerd mounts a snapshot on the host to apply a layer.
      await ctr(dir, "-n", "k8s.io", "images", "import", "--local", "--snapshotter", opts.snapshotter, archive);
    }
  } catch (err) {
    await teardown();
    throw err;
  }
  return Object.assign(env, {
    restartContainerd: async () => {
      for (const close of clients) close();
      await stop(containerd, 30_000);
      await startContainerd();
    },
    restartDaemon: async () => {
      const proc = env.daemon.proc;
      proc.kill("SIGKILL");
      await waitExit(proc, 10_000);
      const earlier = env.daemon.log();
      const next = await startDaemon(dir, daemonToml);
      // Failure messages show both lives of the daemon.
      env.daemon = { ...next, log: () => `${earlier}\n--- restarted (kill -9) ---\n${next.log()}` };
    },
    logs,
    teardown,
  });
}
