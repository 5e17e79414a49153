import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../log/log.ts";
import { MS, nsAddon } from "../native/ns/addon.ts";

/** A step of PID 1's set-up failed; the message says what the guest kernel or image lacks. */
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
  /**
   * The mount table, read once for all the steps (setupPid1) and kept current by ensureMount, which adds what it
   * mounts; absent, each step reads /proc/self/mountinfo itself.
   */
  mounts?: Map<string, string>;
}

/** The path p under opts.root. */
export function rooted(opts: Pid1Options, p: string): string {
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

export interface MountStep {
  source: string;
  target: string;
  type: string;
  options: string[];
  /** What to check when the mount fails. */
  hint: string;
}

/** Options that are mount(2) flags rather than file-system data, as mount(8) splits them. */
const FLAG_OPTIONS: Readonly<Record<string, number>> = {
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
};

/**
 * mount(2) through the ns addon: returns undefined when it succeeded, else why not. Not mount(8): these mounts happen
 * before the agent serves, where spawning one cost ~0.1 s apiece under TCG.
 */
export function mountNow(source: string, target: string, type: string, options: readonly string[]): string | undefined {
  let flags = type === "bind" ? MS.BIND : 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (f === undefined) data.push(o);
    else flags |= f;
  }
  try {
    nsAddon().mount(source, target, type === "bind" ? "" : type, flags, data.join(","));
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Mounts unless target is already a mount point (in known, else in the mount table); returns whether it mounted. */
export function ensureMount(step: MountStep, known?: Map<string, string>): boolean {
  if ((known ?? mountPoints()).has(step.target)) return false;
  mkdirSync(step.target, { recursive: true });
  const failed = mountNow(step.source, step.target, step.type, step.options);
  if (failed !== undefined) {
    throw new Pid1Error(
      `mounting ${step.type} on ${step.target} failed (options ${step.options.join(",") || "none"}): ${failed}; ${step.hint}`,
    );
  }
  known?.set(step.target, step.type);
  return true;
}
