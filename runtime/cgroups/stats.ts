import { readFile } from "node:fs/promises";
import path from "node:path";

/** Where a process's cgroup lives: one directory on cgroup v2, one per controller on v1. */
export type CgroupPaths = { version: 2; dir: string } | { version: 1; dirs: Partial<Record<string, string>> };

interface CgroupMount {
  version: 1 | 2;
  /** v1: the controllers this hierarchy carries. */
  controllers: string[];
  /** The cgroup path the mount shows at its mount point. */
  root: string;
  mountPoint: string;
}

/** cgroup mounts from a /proc/<pid>/mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!pre || !post) continue;
    const f = pre.split(" ");
    const [fstype, , superOpts = ""] = post.split(" ");
    const root = unescapeMountinfo(f[3] ?? "/");
    const mountPoint = unescapeMountinfo(f[4] ?? "");
    if (fstype === "cgroup2") out.push({ version: 2, controllers: [], root, mountPoint });
    else if (fstype === "cgroup") {
      const controllers = superOpts.split(",").filter((o) => !["rw", "ro"].includes(o) && !o.includes("="));
      out.push({ version: 1, controllers, root, mountPoint });
    }
  }
  return out;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * Resolves /proc/<pid>/cgroup against the mounted hierarchies. A process with v1 controllers (a v1 or hybrid
 * host) is read through the v1 mounts; a process with only the "0::" line through the cgroup2 mount.
 */
export function resolveCgroupPaths(procCgroup: string, mounts: CgroupMount[]): CgroupPaths {
  const dirs: Partial<Record<string, string>> = {};
  let unified: string | undefined;
  for (const line of procCgroup.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, hid, list = "", cg = "/"] = m;
    if (hid === "0" && list === "") {
      unified = cg;
      continue;
    }
    for (const c of list.split(",")) {
      if (!c || c.startsWith("name=")) continue;
      const mount = mounts.find((mt) => mt.version === 1 && mt.controllers.includes(c));
      if (mount) dirs[c] = join(mount, cg);
    }
  }
  if (Object.keys(dirs).length > 0) return { version: 1, dirs };
  const v2 = mounts.find((mt) => mt.version === 2);
  if (unified === undefined || !v2) {
    throw new Error("no cgroup of the process is mounted: mount cgroup2 on /sys/fs/cgroup (or the v1 controllers)");
  }
  return { version: 2, dir: join(v2, unified) };
}

/** The directories of cgroup `cg` (a path from the hierarchy root) in every mounted hierarchy. */
export function cgroupPathsFor(cg: string, mounts: CgroupMount[]): CgroupPaths {
  const v1 = mounts.filter((m) => m.version === 1 && m.controllers.length > 0);
  if (v1.length) {
    const dirs: Partial<Record<string, string>> = {};
    for (const m of v1) for (const c of m.controllers) dirs[c] = join(m, cg);
    return { version: 1, dirs };
  }
  const v2 = mounts.find((m) => m.version === 2);
  if (!v2) throw new Error("no cgroup hierarchy is mounted: mount cgroup2 on /sys/fs/cgroup");
  return { version: 2, dir: join(v2, cg) };
}

function join(mount: CgroupMount, cg: string): string {
  const rel = path.posix.relative(mount.root, cg);
  return rel.startsWith("..") ? path.posix.join(mount.mountPoint, cg) : path.posix.join(mount.mountPoint, rel);
}

/** The cgroup of a live process. */
export async function cgroupOf(pid: number): Promise<CgroupPaths> {
  const [cg, mi] = await Promise.all([
    readFile(`/proc/${pid}/cgroup`, "utf8"),
    readFile("/proc/self/mountinfo", "utf8"),
  ]);
  return resolveCgroupPaths(cg, parseCgroupMounts(mi));
}

/** null: unlimited ("max" on v2, the page-rounded 2^63 on v1). */
export type Limit = bigint | null;

export interface IoStatV2 {
  major: number;
  minor: number;
  rbytes: bigint;
  wbytes: bigint;
  rios: bigint;
  wios: bigint;
}

/** Raw cgroup v2 numbers; a section is absent when its controller is not enabled for the cgroup. */
export interface CgroupV2Stats {
  version: 2;
  memory?: {
    current: bigint;
    max: Limit;
    swapCurrent?: bigint;
    swapMax?: Limit;
    /** memory.stat: anon, file, kernel_stack, ... */
    stat: Record<string, bigint>;
    /** memory.events: low, high, max, oom, oom_kill. */
    events: Record<string, bigint>;
  };
  /** cpu.stat: usage_usec, user_usec, system_usec, nr_periods, nr_throttled, throttled_usec. */
  cpu?: Record<string, bigint>;
  pids?: { current: bigint; max: Limit };
  io?: IoStatV2[];
}

export interface BlkioEntry {
  major: number;
  minor: number;
  op: string;
  value: bigint;
}

export interface MemoryCountersV1 {
  usage: bigint;
  limit: Limit;
  maxUsage: bigint;
  failcnt: bigint;
}

/** Raw cgroup v1 numbers; a section is absent when its hierarchy is not mounted. */
export interface CgroupV1Stats {
  version: 1;
  memory?: {
    usage: MemoryCountersV1;
    /** memory.memsw.*: memory + swap (absent without swap accounting). */
    swap?: MemoryCountersV1;
    kernel?: MemoryCountersV1;
    kernelTcp?: MemoryCountersV1;
    /** memory.stat: cache, rss, total_*, ... */
    stat: Record<string, bigint>;
    /** memory.oom_control: oom_kill_disable, under_oom, oom_kill. */
    oomControl: Record<string, bigint>;
  };
  cpu?: {
    usageNs: bigint;
    perCpuNs: bigint[];
    userNs?: bigint;
    kernelNs?: bigint;
    /** cpu.stat: nr_periods, nr_throttled, throttled_time (ns). */
    throttling: Record<string, bigint>;
  };
  pids?: { current: bigint; max: Limit };
  blkio?: { ioServiceBytesRecursive: BlkioEntry[]; ioServicedRecursive: BlkioEntry[] };
}

export type CgroupStats = CgroupV1Stats | CgroupV2Stats;

async function readOpt(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`reading cgroup file ${file}: ${(e as Error).message}`);
  }
}

function num(v: string, file: string): bigint {
  try {
    return BigInt(v.trim());
  } catch {
    throw new Error(`cgroup file ${file}: "${v}" is not a number`);
  }
}

// v1 reports "unlimited" as the largest page-aligned signed 64-bit value.
const V1_UNLIMITED = 0x7ffffffffffff000n;

function limit(v: string, file: string): Limit {
  if (v === "max") return null;
  const n = num(v, file);
  return n >= V1_UNLIMITED ? null : n;
}

function keyed(text: string, file: string): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = num(v, file);
  }
  return out;
}

export function parseIoStat(text: string, file = "io.stat"): IoStatV2[] {
  const out: IoStatV2[] = [];
  for (const line of text.split("\n")) {
    const [dev, ...kv] = line.trim().split(/\s+/);
    const m = /^(\d+):(\d+)$/.exec(dev ?? "");
    if (!m) continue;
    const e: IoStatV2 = { major: Number(m[1]), minor: Number(m[2]), rbytes: 0n, wbytes: 0n, rios: 0n, wios: 0n };
    for (const pair of kv) {
      const [k, v] = pair.split("=");
      if ((k === "rbytes" || k === "wbytes" || k === "rios" || k === "wios") && v) e[k] = num(v, file);
    }
    out.push(e);
  }
  return out;
}

export function parseBlkio(text: string, file: string): BlkioEntry[] {
  const out: BlkioEntry[] = [];
  for (const line of text.split("\n")) {
    const [dev, op, v] = line.trim().split(/\s+/);
    const m = /^(\d+):(\d+)$/.exec(dev ?? "");
    if (m && op && v !== undefined) out.push({ major: Number(m[1]), minor: Number(m[2]), op, value: num(v, file) });
  }
  return out;
}

export async function readCgroupStats(paths: CgroupPaths): Promise<CgroupStats> {
  return paths.version === 2 ? readV2(paths.dir) : readV1(paths.dirs);
}

async function readV2(dir: string): Promise<CgroupV2Stats> {
  const f = (name: string) => path.join(dir, name);
  const [current, max, swapCurrent, swapMax, memStat, memEvents, cpuStat, pidsCurrent, pidsMax, ioStat] =
    await Promise.all(
      [
        "memory.current",
        "memory.max",
        "memory.swap.current",
        "memory.swap.max",
        "memory.stat",
        "memory.events",
        "cpu.stat",
        "pids.current",
        "pids.max",
        "io.stat",
      ].map((n) => readOpt(f(n))),
    );
  const out: CgroupV2Stats = { version: 2 };
  if (current !== undefined && max !== undefined) {
    out.memory = {
      current: num(current, f("memory.current")),
      max: limit(max, f("memory.max")),
      stat: keyed(memStat ?? "", f("memory.stat")),
      events: keyed(memEvents ?? "", f("memory.events")),
      ...(swapCurrent !== undefined ? { swapCurrent: num(swapCurrent, f("memory.swap.current")) } : {}),
      ...(swapMax !== undefined ? { swapMax: limit(swapMax, f("memory.swap.max")) } : {}),
    };
  }
  // cpu.stat exists in every cgroup (usage comes from the core); throttling keys only with the cpu controller.
  if (cpuStat !== undefined) out.cpu = keyed(cpuStat, f("cpu.stat"));
  if (pidsCurrent !== undefined && pidsMax !== undefined) {
    out.pids = { current: num(pidsCurrent, f("pids.current")), max: limit(pidsMax, f("pids.max")) };
  }
  if (ioStat !== undefined) out.io = parseIoStat(ioStat, f("io.stat"));
  return out;
}

// cpuacct.stat counts USER_HZ ticks, which is 100 on Linux.
const NS_PER_TICK = 10_000_000n;

async function readV1(dirs: Partial<Record<string, string>>): Promise<CgroupV1Stats> {
  const out: CgroupV1Stats = { version: 1 };
  const mem = dirs.memory;
  if (mem) {
    const counters = async (prefix: string): Promise<MemoryCountersV1 | undefined> => {
      const names = ["usage_in_bytes", "limit_in_bytes", "max_usage_in_bytes", "failcnt"].map((n) =>
        path.join(mem, `${prefix}${n}`),
      );
      const [u, l, m, fc] = await Promise.all(names.map(readOpt));
      if (u === undefined || l === undefined || m === undefined || fc === undefined) return undefined;
      return {
        usage: num(u, names[0]!),
        limit: limit(l, names[1]!),
        maxUsage: num(m, names[2]!),
        failcnt: num(fc, names[3]!),
      };
    };
    const [usage, swap, kernel, kernelTcp, stat, oom] = await Promise.all([
      counters("memory."),
      counters("memory.memsw."),
      counters("memory.kmem."),
      counters("memory.kmem.tcp."),
      readOpt(path.join(mem, "memory.stat")),
      readOpt(path.join(mem, "memory.oom_control")),
    ]);
    if (usage) {
      out.memory = {
        usage,
        stat: keyed(stat ?? "", path.join(mem, "memory.stat")),
        oomControl: keyed(oom ?? "", path.join(mem, "memory.oom_control")),
        ...(swap ? { swap } : {}),
        ...(kernel ? { kernel } : {}),
        ...(kernelTcp ? { kernelTcp } : {}),
      };
    }
  }
  const acct = dirs.cpuacct;
  if (acct) {
    const [usage, perCpu, stat, cpuStat] = await Promise.all([
      readOpt(path.join(acct, "cpuacct.usage")),
      readOpt(path.join(acct, "cpuacct.usage_percpu")),
      readOpt(path.join(acct, "cpuacct.stat")),
      dirs.cpu ? readOpt(path.join(dirs.cpu, "cpu.stat")) : undefined,
    ]);
    if (usage !== undefined) {
      const ticks = keyed(stat ?? "", path.join(acct, "cpuacct.stat"));
      out.cpu = {
        usageNs: num(usage, path.join(acct, "cpuacct.usage")),
        perCpuNs: (perCpu ?? "")
          .split(/\s+/)
          .filter(Boolean)
          .map((v) => num(v, path.join(acct, "cpuacct.usage_percpu"))),
        ...(ticks.user !== undefined ? { userNs: ticks.user * NS_PER_TICK } : {}),
        ...(ticks.system !== undefined ? { kernelNs: ticks.system * NS_PER_TICK } : {}),
        throttling: keyed(cpuStat ?? "", "cpu.stat"),
      };
    }
  }
  const pids = dirs.pids;
  if (pids) {
    const [cur, max] = await Promise.all([
      readOpt(path.join(pids, "pids.current")),
      readOpt(path.join(pids, "pids.max")),
    ]);
    if (cur !== undefined && max !== undefined) {
      out.pids = { current: num(cur, path.join(pids, "pids.current")), max: limit(max, path.join(pids, "pids.max")) };
    }
  }
  const blk = dirs.blkio;
  if (blk) {
    const bytesFile = path.join(blk, "blkio.throttle.io_service_bytes_recursive");
    const opsFile = path.join(blk, "blkio.throttle.io_serviced_recursive");
    const [bytes, ops] = await Promise.all([readOpt(bytesFile), readOpt(opsFile)]);
    if (bytes !== undefined && ops !== undefined) {
      out.blkio = {
        ioServiceBytesRecursive: parseBlkio(bytes, bytesFile),
        ioServicedRecursive: parseBlkio(ops, opsFile),
      };
    }
  }
  return out;
}
