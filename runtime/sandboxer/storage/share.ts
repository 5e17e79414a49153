import { mkdir } from "node:fs/promises";
import path from "node:path";
import { GUEST_POD_FILES_DIR, GUEST_SHARE } from "../../contract/share.ts";
import { bindMount, isMountPoint, mountPoints, moveMount, selfBind, topMountsUnder, unmount } from "./mount.ts";

/**
 * A sandbox's share, split so the guest can never redirect the host (the bug class of Kata's CVE-2020-2026):
 * - `mounts/` is the host's working tree: share files, container bundles and the `storage<N>` mount points. The
 *   guest never sees it writable, so no name the host creates, mounts onto or removes there can be a guest's link,
 *   FIFO or replacement.
 * - `shared/` is what the VMM exports: a read-only bind of mounts/ and its slave, so every mount the host makes in
 *   mounts/ appears there with its own flags (a container's rootfs or a rw volume stays writable inside), while the
 *   top level, where the host works, is read-only to the guest.
 * - `staging/` is a private mount point where a mount gets its final flags before it is moved into mounts/: flags
 *   set after a mount has propagated do not reach its copy in shared/.
 */
export interface ShareLayout {
  mounts: string;
  shared: string;
  staging: string;
  /** The share as the guest sees it. */
  guest: string;
  /** Where the guest keeps its writable copies of the pod's files, which containers bind. */
  podFiles: string;
}

export function shareLayout(sandboxDir: string): ShareLayout {
  return {
    mounts: path.join(sandboxDir, "mounts"),
    shared: path.join(sandboxDir, "shared"),
    staging: path.join(sandboxDir, "staging"),
    guest: GUEST_SHARE,
    podFiles: GUEST_POD_FILES_DIR,
  };
}

/** Creates the host's working tree (before the VM exists: the share files go there at Create). */
export async function createShareDirs(share: ShareLayout): Promise<void> {
  for (const d of [share.mounts, share.shared, share.staging]) await mkdir(d, { recursive: true, mode: 0o700 });
}

/** Sets up the mounts of the split; idempotent, so a half-done setup is completed rather than doubled. */
export async function mountShare(share: ShareLayout): Promise<void> {
  await createShareDirs(share);
  // Read once: these three mounts do not show up in one another's places.
  const mounted = new Set(await mountPoints());
  // A peer group of its own: mounts made below mounts/ propagate to shared/ and nowhere else.
  if (!mounted.has(share.mounts)) await selfBind(share.mounts, ["private", "shared"]);
  // Read-only at its top, a slave of mounts/ (rbind: anything already below mounts/ comes along).
  if (!mounted.has(share.shared)) await bindMount(share.mounts, share.shared, true);
  if (!mounted.has(share.staging)) await selfBind(share.staging, ["private"]);
}

/**
 * Mounts prepared in staging/<name> (with their final flags) go live as mounts/<name>, and so appear read-only at
 * the top and with their own flags below in the guest's view.
 */
export async function publish(share: ShareLayout, name: string): Promise<void> {
  await moveMount(path.join(share.staging, name), path.join(share.mounts, name));
}

/**
 * Detaches one published mount from both views: shared/'s copy first (a copy with submounts is not taken down by
 * propagation), then the host's.
 */
export async function unpublish(share: ShareLayout, name: string): Promise<void> {
  for (const root of [share.shared, share.mounts, share.staging]) {
    const p = path.join(root, name);
    if (await isMountPoint(p)) await unmount(p);
  }
}

/**
 * Takes every mount of a sandbox down: whatever its records say, nothing stays mounted under sandboxDir. Each top
 * mount is detached with all its submounts in one step; none is propagated back to the host's trees (binds are
 * slaves of their sources).
 */
export async function unmountAllUnder(sandboxDir: string): Promise<void> {
  const failures: string[] = [];
  for (const m of (await topMountsUnder(sandboxDir)).reverse()) {
    await unmount(m).catch((e: Error) => failures.push(e.message));
  }
  if (failures.length) throw new Error(failures.join("; "));
}
