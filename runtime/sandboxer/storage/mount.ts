import { execa } from "execa";

/** mount(8) with a clear error naming the target; Node has no mount(2). */
export async function mount(type: string, source: string, target: string, options: string[]): Promise<void> {
  const args = ["-t", type, ...(options.length ? ["-o", options.join(",")] : []), source, target];
  const r = await execa("mount", args, { reject: false, stdin: "ignore" });
  if (r.failed) throw new Error(`mount ${type} ${source} on ${target} failed: ${r.stderr.trim() || r.shortMessage}`);
}

export async function bindMount(source: string, target: string, readonly: boolean): Promise<void> {
  await mount("none", source, target, ["rbind"]);
  // A read-only bind needs a remount: the first mount ignores "ro" together with "bind".
  if (readonly) await mount("none", "none", target, ["remount", "bind", "ro"]);
}

/** Unmounts target (recursively for rbinds); a busy mount is detached lazily rather than leaked. */
export async function unmount(target: string): Promise<void> {
  const r = await execa("umount", ["-R", target], { reject: false, stdin: "ignore" });
  if (!r.failed || /not mounted|no mount point|not found/.test(r.stderr)) return;
  const lazy = await execa("umount", ["-l", target], { reject: false, stdin: "ignore" });
  if (lazy.failed) throw new Error(`umount ${target} failed: ${r.stderr.trim()}`);
}

/**
 * Makes dir a mount point with shared propagation, so mounts made below it later also appear in the mount
 * namespace of a helper started before them (virtiofsd sandboxes itself in one, as a slave of the host's).
 */
export async function makeSharedMount(dir: string): Promise<void> {
  await mount("none", dir, dir, ["bind"]);
  const r = await execa("mount", ["--make-shared", dir], { reject: false, stdin: "ignore" });
  if (r.failed) {
    await unmount(dir);
    throw new Error(`mount --make-shared ${dir} failed: ${r.stderr.trim() || r.shortMessage}`);
  }
}
