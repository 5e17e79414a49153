import { readFileSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  type CgroupPaths,
  type CgroupStats,
  cgroupPathsFor,
  parseCgroupMounts,
  readCgroupStats,
} from "../../cgroups/stats.ts";

/** The OCI LinuxResources fields a pod cgroup applies (CRI pod-level resources). */
export interface PodResources {
  cpu?: { shares?: number; quota?: number; period?: number };
  memory?: { limit?: number };
}

/** Controllers kubelet's pod stats and the limits need. */
const CONTROLLERS = ["cpu", "memory", "pids", "io"];
const V1_CONTROLLERS = ["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio"];

/**
 * The sandbox's cgroup on the host, under the pod's CRI cgroup_parent: the VMM and its helpers run in it, so
 * kubelet's pod stats (read from cgroup_parent) count the whole VM, and pod resource limits bound it.
 * cgroupfs parents are paths ("/kubepods/burstable/pod<uid>"); systemd parents are slices
 * ("kubepods-burstable-pod<uid>.slice"), expanded as systemd nests them.
 */
export class PodCgroup {
  private constructor(
    /** Path from the hierarchy root, e.g. /kubepods/pod1/kuasar-vmm-<id>. */
    readonly cgroup: string,
    readonly paths: CgroupPaths,
  ) {}

  static resolve(cgroupParent: string, sandboxId: string, mountinfo?: string): PodCgroup {
    const parent = parentPath(cgroupParent);
    const leaf = cgroupParent.endsWith(".slice") ? `kuasar-vmm-${sandboxId}.scope` : `kuasar-vmm-${sandboxId}`;
    const cg = path.posix.join(parent, leaf);
    const mounts = parseCgroupMounts(mountinfo ?? readFileSync("/proc/self/mountinfo", "utf8"));
    return new PodCgroup(cg, cgroupPathsFor(cg, mounts));
  }

  /** v2: the one directory; v1: one per hierarchy the VM is accounted in (controllers in V1_CONTROLLERS). */
  private dirs(): string[] {
    if (this.paths.version === 2) return [this.paths.dir];
    const { dirs } = this.paths;
    return [...new Set(V1_CONTROLLERS.flatMap((c) => (dirs[c] ? [dirs[c]] : [])))];
  }

  /** cgroup.procs files a process joins by writing its pid (every hierarchy on v1). */
  procsFiles(): string[] {
    return this.dirs().map((d) => path.join(d, "cgroup.procs"));
  }

  /** Creates the cgroup; on v2 the controllers are enabled down from the root where the parents allow it. */
  async create(): Promise<void> {
    for (const d of this.dirs()) await mkdir(d, { recursive: true });
    if (this.paths.version !== 2) {
      // A v1 cpuset with no cpus/mems refuses tasks: every new level takes its parent's.
      const cpuset = this.paths.dirs.cpuset;
      if (cpuset) await inheritCpuset(cpuset, this.cgroup);
      return;
    }
    const leaf = this.paths.dir;
    const root = leaf.slice(0, leaf.length - this.cgroup.length) || "/";
    let dir = root;
    for (const part of this.cgroup.split("/").filter(Boolean).slice(0, -1)) {
      await enableControllers(dir);
      dir = path.join(dir, part);
    }
    await enableControllers(dir);
  }

  stats(): Promise<CgroupStats> {
    return readCgroupStats(this.paths);
  }

  /** Applies pod resources: cpu weight/shares and quota, memory limit. */
  async update(r: PodResources): Promise<void> {
    const writes: Array<[string, string]> = [];
    if (this.paths.version === 2) {
      const d = this.paths.dir;
      if (r.cpu?.shares) writes.push([path.join(d, "cpu.weight"), String(sharesToWeight(r.cpu.shares))]);
      if (r.cpu?.quota !== undefined) {
        const quota = r.cpu.quota > 0 ? String(r.cpu.quota) : "max";
        writes.push([path.join(d, "cpu.max"), `${quota} ${r.cpu.period || 100000}`]);
      }
      if (r.memory?.limit !== undefined) {
        writes.push([path.join(d, "memory.max"), r.memory.limit > 0 ? String(r.memory.limit) : "max"]);
      }
    } else {
      const cpu = this.paths.dirs.cpu;
      const mem = this.paths.dirs.memory;
      if (cpu && r.cpu?.shares) writes.push([path.join(cpu, "cpu.shares"), String(r.cpu.shares)]);
      if (cpu && r.cpu?.period) writes.push([path.join(cpu, "cpu.cfs_period_us"), String(r.cpu.period)]);
      if (cpu && r.cpu?.quota !== undefined)
        writes.push([path.join(cpu, "cpu.cfs_quota_us"), String(r.cpu.quota || -1)]);
      if (mem && r.memory?.limit !== undefined) {
        writes.push([path.join(mem, "memory.limit_in_bytes"), String(r.memory.limit > 0 ? r.memory.limit : -1)]);
      }
    }
    for (const [file, value] of writes) {
      try {
        await writeFile(file, value);
      } catch (err) {
        throw new Error(`pod cgroup ${this.cgroup}: cannot write ${value} to ${file}: ${(err as Error).message}`);
      }
    }
  }

  /** Removes the cgroup once its processes are gone (retries briefly: exiting processes leave it late). */
  async remove(): Promise<void> {
    for (const d of this.dirs()) {
      for (let attempt = 0; ; attempt++) {
        try {
          await rmdir(d);
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === "ENOENT") break;
          if (code !== "EBUSY" || attempt >= 20) {
            throw new Error(`pod cgroup ${d} cannot be removed: ${(err as Error).message}`);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }
}

/** cgroup_parent as a path from the hierarchy root. */
export function parentPath(cgroupParent: string): string {
  if (!cgroupParent.endsWith(".slice")) {
    if (!cgroupParent.startsWith("/") || cgroupParent.split("/").includes("..")) {
      throw new Error(`cgroup_parent "${cgroupParent}" must be an absolute path or a systemd slice name`);
    }
    return path.posix.normalize(cgroupParent);
  }
  // "a-b-c.slice" lives in a.slice/a-b.slice/a-b-c.slice; "-.slice" is the root.
  if (cgroupParent === "-.slice") return "/";
  const base = cgroupParent.slice(0, -".slice".length);
  if (!base || cgroupParent.includes("/") || base.includes("--") || base.startsWith("-") || base.endsWith("-")) {
    throw new Error(`cgroup_parent "${cgroupParent}" is not a valid systemd slice name`);
  }
  const words = base.split("-");
  return `/${words.map((_, i) => `${words.slice(0, i + 1).join("-")}.slice`).join("/")}`;
}

/** cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts them. */
function sharesToWeight(shares: number): number {
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

async function enableControllers(dir: string): Promise<void> {
  let available: string[];
  try {
    available = (await readFile(path.join(dir, "cgroup.controllers"), "utf8")).trim().split(/\s+/);
  } catch {
    return;
  }
  const wanted = CONTROLLERS.filter((c) => available.includes(c));
  if (!wanted.length) return;
  // Refused where the parent holds processes itself (the no-internal-processes rule): stats still aggregate.
  await writeFile(path.join(dir, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" ")).catch(() => {});
}

async function inheritCpuset(leaf: string, cgroup: string): Promise<void> {
  const levels = cgroup.split("/").filter(Boolean).length;
  const chain: string[] = [];
  for (let d = leaf, i = 0; i < levels; i++, d = path.dirname(d)) chain.unshift(d);
  for (const dir of chain) {
    for (const f of ["cpuset.cpus", "cpuset.mems"]) {
      if ((await readFile(path.join(dir, f), "utf8")).trim()) continue;
      await writeFile(path.join(dir, f), (await readFile(path.join(path.dirname(dir), f), "utf8")).trim());
    }
  }
}
