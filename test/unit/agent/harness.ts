import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { INIT_EXIT_FD_ENV } from "../../../runtime/agent/exit-monitor.ts";
import { buildNative } from "../../../runtime/native/build.ts";
import { buildGypAddon } from "../../../runtime/native/gyp.ts";

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const nativeOut = path.join(repo, "build", "native");

/** Builds (or reuses) the agent's pty and ns addons and points their loaders at them. */
export async function addonsReady(): Promise<void> {
  process.env.KUASAR_PTY_ADDON = await buildGypAddon("pty", nativeOut);
  process.env.KUASAR_NS_ADDON = await buildGypAddon("ns", nativeOut);
}

/**
 * Container processes are orphaned when runc exits, so a test needs a subreaper above it that reports their
 * exits: runtime/native/init, as in the guest. Returns true when this process already runs under it; otherwise
 * re-runs the test file under `init --` (stdio passed through, so node --test sees the inner run) and returns false.
 */
export async function underInit(metaUrl: string): Promise<boolean> {
  if (process.env[INIT_EXIT_FD_ENV]) return true;
  const { init } = await buildNative({ outDir: nativeOut });
  const child = spawn(init, ["--", process.execPath, ...process.execArgv, fileURLToPath(metaUrl)], {
    stdio: "inherit",
  });
  const code = await new Promise<number>((resolve) => {
    child.on("exit", (c, sig) => resolve(c ?? (sig ? 128 + os.constants.signals[sig] : 1)));
    child.on("error", () => resolve(1));
  });
  process.exitCode = code;
  return false;
}

/** Fails with how to install what is missing (tests do not skip silently). */
export async function requireTools(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the task tests run runc and mount: run them as root");
  for (const [tool, pkg] of [
    ["runc", "runc"],
    ["busybox", "busybox-static"],
  ] as const) {
    const r = await execa(tool, ["--help"], { reject: false, stdin: "ignore" });
    if ((r as { code?: string }).code === "ENOENT") throw new Error(`${tool} is missing: apt-get install -y ${pkg}`);
  }
}

/** A busybox root file system (static busybox plus applet links), built once per directory. */
export async function busyboxRootfs(dir: string): Promise<string> {
  const rootfs = path.join(dir, "rootfs");
  if (existsSync(path.join(rootfs, "bin", "busybox"))) return rootfs;
  const busybox = (await execa("sh", ["-c", "command -v busybox"])).stdout.trim();
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc", "root"])
    await mkdir(path.join(rootfs, d), { recursive: true });
  await copyFile(busybox, path.join(rootfs, "bin", "busybox"));
  const applets = (await execa(busybox, ["--list"])).stdout.split("\n").filter((a) => a && a !== "busybox");
  await Promise.all(applets.map((a) => symlink("busybox", path.join(rootfs, "bin", a))));
  await writeFile(path.join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  return rootfs;
}

const CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_ADMIN"];

/** Writes <dir>/<id>/config.json for a container running args on the shared read-only rootfs. */
export async function writeBundle(
  dir: string,
  rootfs: string,
  id: string,
  opts: { args: string[]; terminal?: boolean; cgroupParent: string; memoryLimit?: number; hostname?: string | null },
): Promise<string> {
  const bundle = path.join(dir, "bundles", id);
  await mkdir(bundle, { recursive: true });
  const spec = {
    ociVersion: "1.0.2",
    process: {
      terminal: opts.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args: opts.args,
      env: ["PATH=/bin", "TERM=xterm"],
      cwd: "/",
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: true },
    ...(opts.hostname === null ? {} : { hostname: opts.hostname ?? id }),
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"] },
    ],
    linux: {
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
      cgroupsPath: `${opts.cgroupParent}/${id}`,
      resources: opts.memoryLimit ? { memory: { limit: opts.memoryLimit, swap: opts.memoryLimit } } : {},
      maskedPaths: ["/proc/kcore", "/sys/firmware"],
      readonlyPaths: ["/proc/sys", "/proc/sysrq-trigger"],
    },
  };
  await writeFile(path.join(bundle, "config.json"), JSON.stringify(spec, null, 1));
  return bundle;
}

export interface Scratch {
  dir: string;
  runcRoot: string;
  /** cgroupsPath prefix private to this run. */
  cgroupParent: string;
  cleanup(): Promise<void>;
}

/** A private temp dir, runc --root and cgroup parent; cleanup force-deletes whatever containers are left. */
export async function scratch(name: string): Promise<Scratch> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `kuasar-${name}-`));
  const runcRoot = path.join(dir, "runc");
  const cgroupParent = `/kuasar-test-${path.basename(dir)}`;
  return {
    dir,
    runcRoot,
    cgroupParent,
    async cleanup() {
      for (const id of await runcList(runcRoot)) {
        await execa("runc", ["--root", runcRoot, "delete", "--force", id], { reject: false });
      }
      removeCgroups(cgroupParent);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Container ids runc knows under root. */
export async function runcList(root: string): Promise<string[]> {
  const r = await execa("runc", ["--root", root, "list", "-q"], { reject: false });
  return (r.stdout ?? "").split("\n").filter(Boolean);
}

/** rmdir the run's cgroup parent (children first) in every hierarchy. */
function removeCgroups(parent: string): void {
  const roots = existsSync("/sys/fs/cgroup/cgroup.controllers")
    ? ["/sys/fs/cgroup"]
    : readdirSync("/sys/fs/cgroup").map((h) => path.join("/sys/fs/cgroup", h));
  for (const root of roots) {
    const dir = path.join(root, parent);
    if (!existsSync(dir)) continue;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) rmdirSync(path.join(dir, e.name));
    }
    rmdirSync(dir);
  }
}

/** Collects a readable's output as text. */
export function collect(stream: NodeJS.ReadableStream | undefined): { text(): string; ended: Promise<void> } {
  let buf = "";
  if (!stream) return { text: () => "", ended: Promise.resolve() };
  stream.on("data", (d: Buffer) => {
    buf += d.toString();
  });
  const ended = new Promise<void>((resolve) => {
    stream.once("end", resolve);
    stream.once("close", resolve);
  });
  return { text: () => buf, ended };
}

/** Zombie processes whose parent is one of parents (a reaper that missed them). */
export function zombies(parents: number[]): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${e}/stat`, "utf8");
    } catch {
      continue;
    }
    // Fields after the parenthesised command: state, ppid, ...
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (state === "Z" && parents.includes(Number(ppid))) out.push(Number(e));
  }
  return out;
}

/** Resolves once predicate(text) holds, failing after ms. */
export async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
