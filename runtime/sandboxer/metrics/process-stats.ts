import { readFile } from "node:fs/promises";

/**
 * /proc/<pid>/stat counts CPU time in USER_HZ ticks, which the kernel fixes at 100 for user space on every
 * architecture Linux ships (sysconf(_SC_CLK_TCK)); Node cannot ask sysconf.
 */
const USER_HZ = 100;

/** Reads a /proc file of a process; undefined once the process is gone (ENOENT, ESRCH) or unreadable. */
async function procFile(proc: string, pid: number, name: string): Promise<string | undefined> {
  try {
    return await readFile(`${proc}/${pid}/${name}`, "utf8");
  } catch {
    return undefined;
  }
}

/** The fields of /proc/<pid>/stat after comm, which may hold spaces and parentheses; undefined for a zombie. */
async function statFields(pid: number, proc: string): Promise<string[] | undefined> {
  const text = await procFile(proc, pid, "stat");
  const close = text?.lastIndexOf(")") ?? -1;
  if (!text || close < 0) return undefined;
  const rest = text.slice(close + 2).split(" ");
  // Exited, not yet reaped: its numbers are final but it is no longer the running VMM.
  if (rest[0] === "Z" || rest[0] === "X") return undefined;
  return rest;
}

/** Whether a live (not zombie) process has this pid. */
export async function isRunning(pid: number, proc = "/proc"): Promise<boolean> {
  return (await statFields(pid, proc)) !== undefined;
}

/** User plus system CPU time the process has used, in seconds; undefined when it has exited. */
export async function cpuSeconds(pid: number, proc = "/proc"): Promise<number | undefined> {
  const f = await statFields(pid, proc);
  if (!f) return undefined;
  // utime and stime are fields 14 and 15 of stat(5); f[0] is field 3.
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / USER_HZ;
}

export interface MemoryBytes {
  /** Resident set: every page mapped, shared ones counted in full. */
  rss: number;
  /** Proportional set: shared pages divided among the processes that map them, so sandboxes add up. */
  pss: number;
}

/** The process's resident and proportional memory from smaps_rollup; undefined when it has exited. */
export async function memoryBytes(pid: number, proc = "/proc"): Promise<MemoryBytes | undefined> {
  const text = await procFile(proc, pid, "smaps_rollup");
  if (!text) return undefined;
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const rss = kb("Rss");
  const pss = kb("Pss");
  // A process that is exiting has no memory map left: an empty rollup.
  if (rss === undefined || pss === undefined) return undefined;
  return { rss, pss };
}
