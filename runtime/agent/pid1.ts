import { lstatSync, mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { GUEST_SHARE } from "../contract/share.ts";
import { applyDefaultSysctls } from "./default-sysctls.ts";
import { ensureMount, mountPoints, type Pid1Options, rooted } from "./mounts.ts";
import { bindEtcFiles, mountShare, setHostnameFromShare } from "./pod-share.ts";

export function mountProc(opts: Pid1Options = {}): boolean {
  return ensureMount(
    {
      source: "proc",
      target: rooted(opts, "/proc"),
      type: "proc",
      options: ["nosuid", "nodev", "noexec"],
      hint: "the guest kernel needs CONFIG_PROC_FS",
    },
    opts.mounts,
  );
}

export function mountSysfs(opts: Pid1Options = {}): boolean {
  return ensureMount(
    {
      source: "sysfs",
      target: rooted(opts, "/sys"),
      type: "sysfs",
      options: ["nosuid", "nodev", "noexec"],
      hint: "the guest kernel needs CONFIG_SYSFS",
    },
    opts.mounts,
  );
}

export function mountDevtmpfs(opts: Pid1Options = {}): boolean {
  return ensureMount(
    {
      source: "devtmpfs",
      target: rooted(opts, "/dev"),
      type: "devtmpfs",
      options: ["nosuid", "mode=0755"],
      hint: "the guest kernel needs CONFIG_DEVTMPFS",
    },
    opts.mounts,
  );
}

export function mountDevShm(opts: Pid1Options = {}): boolean {
  return ensureMount(
    {
      source: "shm",
      target: rooted(opts, "/dev/shm"),
      type: "tmpfs",
      options: ["nosuid", "nodev", "mode=1777"],
      hint: "the guest kernel needs CONFIG_TMPFS",
    },
    opts.mounts,
  );
}

/** A devpts of its own (newinstance) whose ptmx anyone may open, with /dev/ptmx pointing at it. */
export function mountDevPts(opts: Pid1Options = {}): boolean {
  const mounted = ensureMount(
    {
      source: "devpts",
      target: rooted(opts, "/dev/pts"),
      type: "devpts",
      options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      hint: "the guest kernel needs CONFIG_UNIX98_PTYS",
    },
    opts.mounts,
  );
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
  const mounted = ensureMount(
    {
      source: "tmpfs",
      target: rooted(opts, "/run"),
      type: "tmpfs",
      options: ["nosuid", "nodev", "mode=0755"],
      hint: "the guest kernel needs CONFIG_TMPFS",
    },
    opts.mounts,
  );
  mkdirSync(rooted(opts, GUEST_SHARE), { recursive: true });
  return mounted;
}

/** /tmp on tmpfs: the image root is mounted read-only and shared by every VM. */
export function mountTmp(opts: Pid1Options = {}): boolean {
  return ensureMount(
    {
      source: "tmpfs",
      target: rooted(opts, "/tmp"),
      type: "tmpfs",
      options: ["nosuid", "nodev", "mode=1777"],
      hint: "the guest kernel needs CONFIG_TMPFS",
    },
    opts.mounts,
  );
}

const CONTROLLERS = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/** cgroup2 on /sys/fs/cgroup with the container controllers enabled for child cgroups. Returns those enabled. */
export function mountCgroup2(opts: Pid1Options = {}): string[] {
  const dir = rooted(opts, "/sys/fs/cgroup");
  ensureMount(
    {
      source: "cgroup2",
      target: dir,
      type: "cgroup2",
      options: ["nosuid", "nodev", "noexec"],
      hint: "the guest kernel needs CONFIG_CGROUPS (and runc needs CONFIG_BPF_SYSCALL + CONFIG_CGROUP_BPF)",
    },
    opts.mounts,
  );
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
