import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import type { Logger } from "../log/log.ts";

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

/**
 * Runs mount(8) with args; resolves to undefined when it succeeded, else to what it printed (or why it did not run).
 * node's own execFile rather than execa: these mounts happen before the agent serves, where execa's first calls
 * cost ~0.5 s under TCG (measured in the guest).
 */
export async function runMount(args: string[]): Promise<string | undefined> {
  try {
    await promisify(execFile)("mount", args, { timeout: 60_000 });
    return undefined;
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    return (err.stderr || err.stdout || err.message).trim();
  }
}

/** Mounts unless target is already a mount point; returns whether it mounted. */
export async function ensureMount(step: MountStep): Promise<boolean> {
  if (mountPoints().has(step.target)) return false;
  await mkdir(step.target, { recursive: true });
  const args = [
    "-t",
    step.type,
    ...(step.options.length ? ["-o", step.options.join(",")] : []),
    step.source,
    step.target,
  ];
  const failed = await runMount(args);
  if (failed !== undefined) {
    throw new Pid1Error(
      `mounting ${step.type} on ${step.target} failed (mount ${args.join(" ")}): ${failed}; ${step.hint}`,
    );
  }
  return true;
}
