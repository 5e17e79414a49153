import { lstatSync, mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { GUEST_SHARE } from "../contract/share.ts";
import { applyDefaultSysctls } from "./default-sysctls.ts";
import { ensureMount, mountPoints, type Pid1Options, rooted } from "./mounts.ts";
import { bindEtcFiles, mountShare, setHostnameFromShare } from "./pod-share.ts";

/** The file systems PID 1 mounts, at their guest paths, each with what the guest kernel needs for it. */
const FILESYSTEMS = {
  proc: {
    source: "proc",
    target: "/proc",
    type: "proc",
    options: ["nosuid", "nodev", "noexec"],
    needs: "CONFIG_PROC_FS",
  },
  sysfs: {
    source: "sysfs",
    target: "/sys",
    type: "sysfs",
    options: ["nosuid", "nodev", "noexec"],
    needs: "CONFIG_SYSFS",
  },
  devtmpfs: {
    source: "devtmpfs",
    target: "/dev",
    type: "devtmpfs",
    options: ["nosuid", "mode=0755"],
    needs: "CONFIG_DEVTMPFS",
  },
  shm: {
    source: "shm",
    target: "/dev/shm",
    type: "tmpfs",
    options: ["nosuid", "nodev", "mode=1777"],
    needs: "CONFIG_TMPFS",
  },
  // A devpts of its own (newinstance) whose ptmx anyone may open.
  devpts: {
    source: "devpts",
    target: "/dev/pts",
    type: "devpts",
    options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    needs: "CONFIG_UNIX98_PTYS",
  },
  run: {
    source: "tmpfs",
    target: "/run",
    type: "tmpfs",
    options: ["nosuid", "nodev", "mode=0755"],
    needs: "CONFIG_TMPFS",
  },
  // The image root is mounted read-only and shared by every VM.
  tmp: {
    source: "tmpfs",
    target: "/tmp",
    type: "tmpfs",
    options: ["nosuid", "nodev", "mode=1777"],
    needs: "CONFIG_TMPFS",
  },
  cgroup2: {
    source: "cgroup2",
    target: "/sys/fs/cgroup",
    type: "cgroup2",
    options: ["nosuid", "nodev", "noexec"],
    needs: "CONFIG_CGROUPS (and runc needs CONFIG_BPF_SYSCALL + CONFIG_CGROUP_BPF)",
  },
} as const;

/** Mounts one of FILESYSTEMS unless it is there already; true when it mounted it. */
function mountFs(name: keyof typeof FILESYSTEMS, opts: Pid1Options): boolean {
  const { needs, target, options, ...fs } = FILESYSTEMS[name];
  return ensureMount(
    { ...fs, target: rooted(opts, target), options: [...options], hint: `the guest kernel needs ${needs}` },
    opts.mounts,
  );
}

export const mountProc = (opts: Pid1Options = {}) => mountFs("proc", opts);
export const mountSysfs = (opts: Pid1Options = {}) => mountFs("sysfs", opts);
export const mountDevtmpfs = (opts: Pid1Options = {}) => mountFs("devtmpfs", opts);
export const mountDevShm = (opts: Pid1Options = {}) => mountFs("shm", opts);
export const mountTmp = (opts: Pid1Options = {}) => mountFs("tmp", opts);

/** devpts, with /dev/ptmx pointing at its ptmx. */
export function mountDevPts(opts: Pid1Options = {}): boolean {
  const mounted = mountFs("devpts", opts);
  const ptmx = rooted(opts, "/dev/ptmx");
  const st = lstatSync(ptmx, { throwIfNoEntry: false });
  if (!st?.isSymbolicLink()) {
    if (st) unlinkSync(ptmx);
    symlinkSync("pts/ptmx", ptmx);
  }
  return mounted;
}

/** tmpfs on /run, then the share's mount point (the tmpfs hides whatever the image had there). */
export function mountRun(opts: Pid1Options = {}): boolean {
  const mounted = mountFs("run", opts);
  mkdirSync(rooted(opts, GUEST_SHARE), { recursive: true });
  return mounted;
}

const CONTROLLERS = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/** cgroup2 on /sys/fs/cgroup with the container controllers enabled for child cgroups. Returns those enabled. */
export function mountCgroup2(opts: Pid1Options = {}): string[] {
  const dir = rooted(opts, FILESYSTEMS.cgroup2.target);
  mountFs("cgroup2", opts);
  const available = readFileSync(path.join(dir, "cgroup.controllers"), "utf8").trim().split(/\s+/);
  const enabled: string[] = [];
  for (const c of CONTROLLERS.filter((c) => available.includes(c))) {
    try {
      writeFileSync(path.join(dir, "cgroup.subtree_control"), `+${c}`);
      enabled.push(c);
    } catch (e) {
      // One controller failing (e.g. cpu with a realtime task) must not cost the others.
      opts.log?.warn(`cannot enable the ${c} cgroup controller: ${(e as Error).message}`);
    }
  }
  return enabled;
}

export const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Everything PID 1 sets up after the C init started the agent, in order; each step is idempotent. The steps make
 * synchronous file calls: nothing else runs before the agent serves, and each asynchronous one would be a round trip
 * through node's threadpool, which under TCG costs milliseconds (reading /proc/cmdline alone took 94 ms that way).
 */
export function setupPid1(sharefsType: "9p" | "virtiofs", options: Pid1Options = {}): void {
  process.env.PATH = GUEST_PATH;
  mountProc(options);
  // Then one read of the mount table for the other steps: each read and parse is a measurable part of the start
  // under TCG.
  const opts = { ...options, mounts: options.mounts ?? mountPoints() };
  mountSysfs(opts);
  mountDevtmpfs(opts);
  mountDevShm(opts);
  mountDevPts(opts);
  mountRun(opts);
  mountTmp(opts);
  const controllers = mountCgroup2(opts);
  opts.log?.debug(`cgroup controllers enabled: ${controllers.join(" ") || "none"}`);
  applyDefaultSysctls(opts);
  mountShare(sharefsType, opts);
  bindEtcFiles(opts);
  setHostnameFromShare(opts);
}
