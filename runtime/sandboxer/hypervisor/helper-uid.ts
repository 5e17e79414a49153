import { randomInt } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

/**
 * The uid range a sandbox's vsock helper runs under (sandbox.helper_uid_base / helper_uid_count): one uid per running
 * sandbox, used for nothing else on the host, so a guest that takes over its helper holds an unprivileged user that
 * owns no file and no process but that helper's own.
 */
export interface UidRange {
  base: number;
  count: number;
}

/** Below this are the host's own users and groups, nobody (65534) and the 16-bit -1 (65535). */
export const HELPER_UID_MIN = 65536;
/** Tools that keep uids in a signed 32-bit integer mishandle larger ones. */
export const HELPER_UID_MAX = 2 ** 31 - 1;

const inRange = (r: UidRange, id: number) => id >= r.base && id < r.base + r.count;
const last = (r: UidRange) => r.base + r.count - 1;

/** What is wrong with the range itself (base 0 turns the feature off and is always fine). */
export function rangeProblems(r: UidRange): string[] {
  if (r.base === 0) return [];
  const problems: string[] = [];
  if (r.base < HELPER_UID_MIN) {
    problems.push(
      `sandbox.helper_uid_base = ${r.base} is below ${HELPER_UID_MIN}, where the host's own users and groups live: ` +
        `use 0 (helpers as root) or a base of ${HELPER_UID_MIN} or more`,
    );
  }
  if (last(r) > HELPER_UID_MAX) {
    problems.push(
      `sandbox.helper_uid_base = ${r.base} with helper_uid_count = ${r.count} reaches uid ${last(r)}, past ` +
        `${HELPER_UID_MAX}: lower the base or the count`,
    );
  }
  return problems;
}

async function lines(file: string): Promise<string[]> {
  try {
    return (await readFile(file, "utf8")).split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new Error(`cannot read ${file} to check sandbox.helper_uid_base against it: ${(err as Error).message}`);
  }
}

/**
 * Users, groups and subordinate id ranges of this host inside the range. A helper under such an id could reach that
 * user's files and processes, or the user (or a rootless container of theirs) the helper: each is a reason to refuse.
 */
export async function hostIdCollisions(r: UidRange, etcDir = "/etc"): Promise<string[]> {
  if (r.base === 0) return [];
  const found: string[] = [];
  const passwd = path.join(etcDir, "passwd");
  for (const l of await lines(passwd)) {
    const [name, , uid, gid] = l.split(":");
    if (inRange(r, Number(uid))) found.push(`uid ${uid} is user ${name} (${passwd})`);
    if (inRange(r, Number(gid))) found.push(`gid ${gid} is user ${name}'s group (${passwd})`);
  }
  const group = path.join(etcDir, "group");
  for (const l of await lines(group)) {
    const [name, , gid] = l.split(":");
    if (inRange(r, Number(gid))) found.push(`gid ${gid} is group ${name} (${group})`);
  }
  for (const file of ["subuid", "subgid"].map((f) => path.join(etcDir, f))) {
    for (const l of await lines(file)) {
      const [name, start, count] = l.split(":").map((s) => s.trim());
      const [s, n] = [Number(start), Number(count)];
      if (Number.isInteger(s) && Number.isInteger(n) && s <= last(r) && s + n - 1 >= r.base) {
        found.push(`${name}'s subordinate ids ${s}-${s + n - 1} overlap it (${file})`);
      }
    }
  }
  return found;
}

/** The check the daemon makes at startup and before each allocation: problems name the key and what to do. */
export async function checkHelperRange(r: UidRange, etcDir = "/etc"): Promise<string[]> {
  const shape = rangeProblems(r);
  if (shape.length > 0) return shape;
  const found = await hostIdCollisions(r, etcDir);
  if (found.length === 0) return [];
  const shown = found.slice(0, 5).join("; ") + (found.length > 5 ? `; and ${found.length - 5} more` : "");
  return [
    `sandbox.helper_uid_base = ${r.base} with helper_uid_count = ${r.count} (uids ${r.base}-${last(r)}) takes ids ` +
      `this host already uses: ${shown}. Move the range to ids nobody uses, or set helper_uid_base = 0`,
  ];
}

/** Real, effective, saved and filesystem uids and gids of every process, by pid (processes that exit meanwhile are skipped). */
export async function processIds(): Promise<Map<number, number[]>> {
  const out = new Map<number, number[]>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const status = await readFile(`/proc/${name}/status`, "utf8").catch(() => "");
    const ids = status
      .split("\n")
      .filter((l) => l.startsWith("Uid:") || l.startsWith("Gid:"))
      .flatMap((l) => l.slice(4).trim().split(/\s+/).map(Number));
    if (ids.length > 0) out.set(Number(name), ids);
  }
  return out;
}

/** Pids of the processes running with `id` as any of their uids or gids. */
export async function processesOf(id: number): Promise<number[]> {
  return [...(await processIds())].filter(([, ids]) => ids.includes(id)).map(([pid]) => pid);
}

const KILL_ROUNDS = 20;

/**
 * Kills every process running under a helper uid: the helper's uid is its sandbox's alone, so these are the helper
 * and whatever it started (a taken-over helper may fork to outlive its sandbox). Repeats while new ones appear;
 * resolves with those still left, if any.
 */
export async function killAllOf(uid: number): Promise<number[]> {
  if (uid < HELPER_UID_MIN) throw new Error(`refusing to kill every process of uid ${uid}: not a helper uid`);
  let left: number[] = [];
  for (let round = 0; round < KILL_ROUNDS; round++) {
    left = await processesOf(uid);
    if (left.length === 0) return [];
    for (const pid of left) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    await new Promise((r) => setTimeout(r, 10 * round));
  }
  return left;
}

/** Which uids the daemon's sandboxes hold: one each, from a VM's start (or recovery) until its cleanup. */
export class HelperUids {
  private held = new Map<number, string>();
  /** Offset of the next uid to try; random at first so two daemons on one host rarely race for the same uid. */
  private next: number | undefined;

  constructor(
    private readonly etcDir = "/etc",
    private readonly scan: () => Promise<Map<number, number[]>> = processIds,
  ) {}

  /**
   * A uid of the range that no sandbox of this daemon holds and no process on the host runs under (not even a
   * leftover of a sandbox that is gone), held for `id` until release().
   */
  async allocate(id: string, r: UidRange): Promise<number> {
    const problems = await checkHelperRange(r, this.etcDir);
    if (problems.length > 0) throw new Error(`sandbox ${id}: ${problems.join("; ")}`);
    const busy = new Set([...(await this.scan()).values()].flat().filter((x) => inRange(r, x)));
    // From here on synchronous: two starts at once never pick the same uid.
    this.next ??= randomInt(r.count);
    for (let i = 0; i < r.count; i++) {
      const off = (this.next + i) % r.count;
      const uid = r.base + off;
      if (this.held.has(uid) || busy.has(uid)) continue;
      this.held.set(uid, id);
      this.next = (off + 1) % r.count;
      return uid;
    }
    throw new Error(
      `sandbox ${id}: every helper uid ${r.base}-${last(r)} is held by a sandbox or used by a process: ` +
        "raise sandbox.helper_uid_count (or find what else runs under those uids)",
    );
  }

  /** Claims a uid recorded by a recovered sandbox; throws when another sandbox holds it. */
  hold(uid: number, id: string): void {
    const other = this.held.get(uid);
    if (other !== undefined && other !== id) {
      throw new Error(`sandbox ${id}: its helper uid ${uid} is held by sandbox ${other}`);
    }
    this.held.set(uid, id);
  }

  release(uid: number, id: string): void {
    if (this.held.get(uid) === id) this.held.delete(uid);
  }

  holder(uid: number): string | undefined {
    return this.held.get(uid);
  }
}

/** The daemon's one pool. */
export const helperUids = new HelperUids();
