import { existsSync, lstatSync, readFileSync } from "node:fs";
import { copyFile, mkdir, readFile, symlink, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { GUEST_POD_FILES_DIR, GUEST_SHARE, POD_FILES, SHARE_TAG } from "../contract/share.ts";
import type { Logger } from "../log/log.ts";
import type { ContainerManager } from "./containers.ts";

export class Pid1Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Pid1Error";
  }
}

/** Every path is taken relative to root, so the steps can be exercised in a private mount namespace. */
export interface Pid1Options {
  root?: string;
  log?: Logger;
}

function at(opts: Pid1Options, p: string): string {
  return path.join(opts.root ?? "/", p);
}

/** Mount points from /proc/self/mountinfo (none while /proc is not mounted yet). */
export function mountPoints(): Map<string, string> {
  const out = new Map<string, string>();
  let text = "";
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return out;
  }
  for (const line of text.split("\n")) {
    const [pre, post] = line.split(" - ");
    const mp = pre?.split(" ")[4];
    if (!mp || !post) continue;
    out.set(
      mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))),
      post.split(" ")[0] ?? "",
    );
  }
  return out;
}

/** True when the root file system is the kernel's initramfs, where runc needs --no-pivot. */
export function rootIsInitramfs(): boolean {
  const t = mountPoints().get("/");
  return t === "rootfs" || t === "ramfs";
}

interface MountStep {
  source: string;
  target: string;
  type: string;
  options: string[];
  /** What to check when the mount fails. */
  hint: string;
}

/** Mounts unless target is already a mount point; returns whether it mounted. */
async function ensureMount(step: MountStep): Promise<boolean> {
  if (mountPoints().has(step.target)) return false;
  await mkdir(step.target, { recursive: true });
  const args = [
    "-t",
    step.type,
    ...(step.options.length ? ["-o", step.options.join(",")] : []),
    step.source,
    step.target,
  ];
  const r = await execa("mount", args, { reject: false, all: true, stdin: "ignore", timeout: 60_000 });
  if (r.failed) {
    throw new Pid1Error(
      `mounting ${step.type} on ${step.target} failed (mount ${args.join(" ")}): ${r.all || r.message}; ${step.hint}`,
    );
  }
  return true;
}

export function mountProc(opts: Pid1Options = {}): Promise<boolean> {
  return ensureMount({
    source: "proc",
    target: at(opts, "/proc"),
    type: "proc",
    options: ["nosuid", "nodev", "noexec"],
    hint: "the guest kernel needs CONFIG_PROC_FS",
  });
}

export function mountSysfs(opts: Pid1Options = {}): Promise<boolean> {
  return ensureMount({
    source: "sysfs",
    target: at(opts, "/sys"),
    type: "sysfs",
    options: ["nosuid", "nodev", "noexec"],
    hint: "the guest kernel needs CONFIG_SYSFS",
  });
}

export function mountDevtmpfs(opts: Pid1Options = {}): Promise<boolean> {
  return ensureMount({
    source: "devtmpfs",
    target: at(opts, "/dev"),
    type: "devtmpfs",
    options: ["nosuid", "mode=0755"],
    hint: "the guest kernel needs CONFIG_DEVTMPFS",
  });
}

export function mountDevShm(opts: Pid1Options = {}): Promise<boolean> {
  return ensureMount({
    source: "shm",
    target: at(opts, "/dev/shm"),
    type: "tmpfs",
    options: ["nosuid", "nodev", "mode=1777"],
    hint: "the guest kernel needs CONFIG_TMPFS",
  });
}

/** A devpts of its own (newinstance) whose ptmx anyone may open, with /dev/ptmx pointing at it. */
export async function mountDevPts(opts: Pid1Options = {}): Promise<boolean> {
  const mounted = await ensureMount({
    source: "devpts",
    target: at(opts, "/dev/pts"),
    type: "devpts",
    options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    hint: "the guest kernel needs CONFIG_UNIX98_PTYS",
  });
  const ptmx = at(opts, "/dev/ptmx");
  const st = lstatSync(ptmx, { throwIfNoEntry: false });
  if (!st?.isSymbolicLink()) {
    if (st) await unlink(ptmx);
    await symlink("pts/ptmx", ptmx);
  }
  return mounted;
}

/** tmpfs on /run, then the share's mount point (the tmpfs hides whatever the image had there). */
export async function mountRun(opts: Pid1Options = {}): Promise<boolean> {
  const mounted = await ensureMount({
    source: "tmpfs",
    target: at(opts, "/run"),
    type: "tmpfs",
    options: ["nosuid", "nodev", "mode=0755"],
    hint: "the guest kernel needs CONFIG_TMPFS",
  });
  await mkdir(at(opts, GUEST_SHARE), { recursive: true });
  return mounted;
}

/** /tmp on tmpfs: the image root is mounted read-only and shared by every VM. */
export function mountTmp(opts: Pid1Options = {}): Promise<boolean> {
  return ensureMount({
    source: "tmpfs",
    target: at(opts, "/tmp"),
    type: "tmpfs",
    options: ["nosuid", "nodev", "mode=1777"],
    hint: "the guest kernel needs CONFIG_TMPFS",
  });
}

const CONTROLLERS = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/** cgroup2 on /sys/fs/cgroup with the container controllers enabled for child cgroups. Returns those enabled. */
export async function mountCgroup2(opts: Pid1Options = {}): Promise<string[]> {
  const dir = at(opts, "/sys/fs/cgroup");
  await ensureMount({
    source: "cgroup2",
    target: dir,
    type: "cgroup2",
    options: ["nosuid", "nodev", "noexec"],
    hint: "the guest kernel needs CONFIG_CGROUPS (and runc needs CONFIG_BPF_SYSCALL + CONFIG_CGROUP_BPF)",
  });
  const available = (await readFile(path.join(dir, "cgroup.controllers"), "utf8")).trim().split(/\s+/);
  const enabled: string[] = [];
  for (const c of CONTROLLERS.filter((c) => available.includes(c))) {
    try {
      await writeFile(path.join(dir, "cgroup.subtree_control"), `+${c}`);
      enabled.push(c);
    } catch (e) {
      // One controller failing (e.g. cpu with a realtime task) must not cost the others.
      opts.log?.warn(`cannot enable the ${c} cgroup controller: ${(e as Error).message}`);
    }
  }
  return enabled;
}

/**
 * Mounts the host's share (tag `kuasar`) on /run/kuasar/state. 9p: virtio transport with 9p2000.L (POSIX
 * semantics); msize 256 KiB moves large reads and writes in few round trips while staying under the virtio
 * transport's 512 KiB limit; cache=mmap keeps host changes visible at once yet still lets containers mmap files.
 */
export function mountShare(type: "9p" | "virtiofs", opts: Pid1Options = {}): Promise<boolean> {
  const target = at(opts, GUEST_SHARE);
  if (type === "virtiofs") {
    return ensureMount({
      source: SHARE_TAG,
      target,
      type: "virtiofs",
      options: [],
      hint: "the guest kernel needs CONFIG_VIRTIO_FS and the VM a vhost-user-fs device with tag kuasar",
    });
  }
  return ensureMount({
    source: SHARE_TAG,
    target,
    type: "9p",
    options: ["trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"],
    hint: "the guest kernel needs CONFIG_9P_FS and CONFIG_NET_9P_VIRTIO and the VM a virtio-9p device with mount tag kuasar",
  });
}

/**
 * Copies the pod's files the host prepared (read-only in the share) to the guest's own writable place, where every
 * container of the pod binds them as a runc pod's containers bind the pod's files, and binds them over the VM's /etc.
 * Returns the /etc paths it bound; a second call (the agent restarted) binds nothing again.
 */
export async function bindEtcFiles(opts: Pid1Options = {}): Promise<string[]> {
  const bound: string[] = [];
  const mounted = mountPoints();
  const podDir = at(opts, GUEST_POD_FILES_DIR);
  await mkdir(podDir, { recursive: true });
  for (const name of POD_FILES) {
    const shared = path.join(at(opts, GUEST_SHARE), name);
    const source = path.join(podDir, name);
    const target = path.join(at(opts, "/etc"), name);
    if (!existsSync(shared) || mounted.has(target)) continue;
    if (!existsSync(source)) await copyFile(shared, source);
    if (!existsSync(target)) {
      try {
        await mkdir(path.dirname(target), { recursive: true });
        await writeFile(target, "");
      } catch (e) {
        throw new Pid1Error(
          `cannot create ${target} to bind ${source} over it: ${(e as Error).message}; add the file to the guest image`,
        );
      }
    }
    const r = await execa("mount", ["--bind", source, target], { reject: false, all: true, stdin: "ignore" });
    if (r.failed) throw new Pid1Error(`binding ${source} over ${target} failed: ${r.all || r.message}`);
    bound.push(target);
  }
  return bound;
}

/** Sets the VM's hostname from the share's hostname file, when there is one. */
export async function setHostnameFromShare(opts: Pid1Options = {}): Promise<string | undefined> {
  const name = (await readFile(path.join(at(opts, GUEST_SHARE), "hostname"), "utf8").catch(() => "")).trim();
  if (!name) return undefined;
  try {
    await writeFile(at(opts, "/proc/sys/kernel/hostname"), name);
  } catch (e) {
    throw new Pid1Error(`setting the hostname to "${name}" failed: ${(e as Error).message}`);
  }
  return name;
}

export const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Everything PID 1 sets up after the C init started the agent, in order; each step is idempotent. */
export async function setupPid1(sharefsType: "9p" | "virtiofs", opts: Pid1Options = {}): Promise<void> {
  process.env.PATH = GUEST_PATH;
  await mountProc(opts);
  await mountSysfs(opts);
  await mountDevtmpfs(opts);
  await mountDevShm(opts);
  await mountDevPts(opts);
  await mountRun(opts);
  await mountTmp(opts);
  const controllers = await mountCgroup2(opts);
  opts.log?.debug(`cgroup controllers enabled: ${controllers.join(" ") || "none"}`);
  await mountShare(sharefsType, opts);
  await bindEtcFiles(opts);
  await setHostnameFromShare(opts);
}

/**
 * Graceful power-off: kills and deletes every container, flushes file systems, unmounts the share, then
 * exits; the C init powers the VM off whenever the agent exits.
 */
export async function shutdownGuest(
  manager: ContainerManager,
  opts: Pid1Options & { exitCode?: number } = {},
): Promise<never> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => {
    timer = setTimeout(() => {
      opts.log?.warn("containers did not stop within 15 s; powering off anyway");
      r();
    }, 15_000);
  });
  await Promise.race([manager.shutdown(), late]);
  clearTimeout(timer);
  await execa("sync", { reject: false, stdin: "ignore" });
  const share = at(opts, GUEST_SHARE);
  if (mountPoints().has(share)) {
    const r = await execa("umount", ["-l", share], { reject: false, all: true, stdin: "ignore" });
    if (r.failed) opts.log?.warn(`unmounting ${share} failed: ${r.all}`);
  }
  process.exit(opts.exitCode ?? 0);
}
