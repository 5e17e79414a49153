import { readFile } from "node:fs/promises";
import { execa } from "execa";
import { MS, nsAddon } from "../../native/ns/addon.ts";

async function run(args: string[], what: string): Promise<void> {
  const r = await execa("mount", args, { reject: false, stdin: "ignore" });
  if (r.failed) throw new Error(`${what} failed: ${r.stderr.trim() || r.shortMessage}`);
}

/**
 * mount(2) through the ns addon, for the binds, moves and propagation changes that need no option parsing: a
 * spawned mount(8) cost about 15 ms apiece, three of them on every sandbox's Start.
 */
function sysMount(source: string, target: string, flags: number, what: string): void {
  try {
    nsAddon().mount(source, target, "", flags, "");
  } catch (err) {
    throw new Error(`${what} failed: ${(err as Error).message}`);
  }
}

/** mount(8) with a clear error naming the target, for mounts whose options it parses. */
export async function mount(type: string, source: string, target: string, options: string[]): Promise<void> {
  const args = ["-t", type, ...(options.length ? ["-o", options.join(",")] : []), source, target];
  await run(args, `mount ${type} ${source} on ${target}`);
}

/**
 * A recursive bind that is a slave of its source: mounts the host adds later under the source still show up, but
 * nothing done to the copy (unmounting its submounts at teardown above all) propagates back to the host's tree.
 * A read-only bind is read-only at its top only: submounts keep their own flags (CRI's non-recursive semantics).
 */
export async function bindMount(source: string, target: string, readonly: boolean): Promise<void> {
  const what = `bind mount ${source} on ${target}`;
  sysMount(source, target, MS.BIND | MS.REC, what);
  await orUnmount(target, async () => {
    // A bind remount sets every per-mount flag anew: the ones the bind copied from the source are restated.
    if (readonly) sysMount("none", target, MS.REMOUNT | MS.BIND | MS.RDONLY | (await keptFlags(target)), what);
    sysMount("none", target, MS.SLAVE | MS.REC, what);
  });
}

/** Runs the further steps on a mount just made at target; when one fails, the mount goes before the error does. */
async function orUnmount(target: string, steps: () => Promise<void> | void): Promise<void> {
  try {
    await steps();
  } catch (err) {
    await unmount(target);
    throw err;
  }
}

/** Flags a bind remount must restate, as mount(8) does; the kernel keeps the atime ones by itself. */
const KEPT: Readonly<Record<string, number>> = { nosuid: MS.NOSUID, nodev: MS.NODEV, noexec: MS.NOEXEC };

/** The MS_NOSUID/NODEV/NOEXEC bits of the mount at target (the topmost there). */
async function keptFlags(target: string): Promise<number> {
  const entry = (await mountTable()).filter((m) => m.point === target).pop();
  if (!entry) throw new Error(`${target} is not in /proc/self/mountinfo after it was mounted`);
  return entry.options.reduce((flags, o) => flags | (KEPT[o] ?? 0), 0);
}

/**
 * Makes a recursive bind and every mount below it read-only (OCI "rro") in one mount_setattr(2) call through the ns
 * addon: no submount's path is resolved, so none can lead anywhere through a symbolic link, and a spawned mount(8)
 * per submount (bookworm's cannot do it recursively) is not needed. Done in the private staging tree, before anything
 * is published; the copy is a slave, so the source's own mounts keep their flags.
 */
export function readonlyTree(target: string): void {
  nsAddon().readonlyTree(target);
}

/** Moves a mount (with its submounts) to another mount point; the source's parent mount must not be shared. */
export async function moveMount(source: string, target: string): Promise<void> {
  sysMount(source, target, MS.MOVE, `moving the mount ${source} to ${target}`);
}

export type Propagation = "private" | "shared" | "slave";

const PROPAGATION: Readonly<Record<Propagation, number>> = {
  private: MS.PRIVATE,
  shared: MS.SHARED,
  slave: MS.SLAVE,
};

/**
 * Makes dir a mount point of its own (a bind onto itself), then applies the propagation changes in the order given
 * (private then shared gives a new peer group).
 */
export async function selfBind(dir: string, propagation: Propagation[]): Promise<void> {
  const what = `bind mount ${dir} onto itself (${propagation.join(", ")})`;
  sysMount(dir, dir, MS.BIND, what);
  await orUnmount(dir, () => {
    for (const p of propagation) sysMount("none", dir, PROPAGATION[p], what);
  });
}

/**
 * Detaches target and everything mounted below it in one step (MNT_DETACH): the submounts are never unmounted
 * one by one by path, so a path inside a guest-writable tree is never resolved. A target that is not mounted is
 * left alone.
 */
export async function unmount(target: string): Promise<void> {
  const r = await execa("umount", ["-l", target], { reject: false, stdin: "ignore" });
  if (!r.failed || /not mounted|no mount point|not found|No such file/.test(r.stderr)) return;
  throw new Error(`umount ${target} failed: ${r.stderr.trim() || r.shortMessage}`);
}

/** This process's mounts from /proc/self/mountinfo: mount point (field 5, octal escapes undone), per-mount options. */
async function mountTable(): Promise<Array<{ point: string; options: string[] }>> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const f = l.split(" ");
      return { point: decodeMountPoint(f[4] ?? ""), options: (f[5] ?? "").split(",") };
    });
}

/** Mount points of this process's namespace, in mountinfo's order. */
export async function mountPoints(): Promise<string[]> {
  return (await mountTable()).map((m) => m.point);
}

/** mountinfo's octal escapes (\\040 for a space, ...) undone. */
function decodeMountPoint(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export async function isMountPoint(p: string): Promise<boolean> {
  return (await mountPoints()).includes(p);
}

/**
 * The mount points at or below dir that are not below another such mount point: detaching these takes everything
 * under dir with it.
 */
export async function topMountsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const under = [...new Set((await mountPoints()).filter((m) => m === dir || m.startsWith(prefix)))].sort();
  return under.filter((m, i) => !under.slice(0, i).some((p) => m.startsWith(`${p}/`)));
}
