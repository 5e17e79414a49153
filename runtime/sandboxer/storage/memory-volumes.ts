import { stat, statfs } from "node:fs/promises";
import path from "node:path";
import type { OciMount } from "../../contract/oci.ts";
import {
  DEFAULT_POD_SHM_BYTES,
  emptyDirKey,
  POD_SHM_KEY,
  POD_TMPFS_FLAGS,
  podTmpfsMount,
} from "../../contract/pod-tmpfs.ts";

/** statfs f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
/** kubelet keeps a pod's emptyDir volumes in <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>. */
const EMPTY_DIR_PLUGIN = "kubernetes.io~empty-dir";
/** What /dev/shm gets on top of its container's flags, as containerd mounts a pod's shm for runc. */
const SHM_FLAGS = ["nosuid", "nodev", "noexec"];

/**
 * A container mount that becomes a pod-wide tmpfs in the guest (runtime/contract/pod-tmpfs.ts), or undefined:
 * - a memory-medium emptyDir: the bind of a tmpfs kubelet mounted at .../kubernetes.io~empty-dir/<name>; the guest's
 *   tmpfs gets its size and is shared by the pod's containers mounting the same volume, and nothing of it goes
 *   through the share;
 * - any other /dev/shm: the pod's one /dev/shm. containerd 2.1 sends a sandboxed pod's containers its default spec's
 *   tmpfs (size=65536k) each; a bind of a host tmpfs (its shm directory for its own pod sandboxes) is sized as that
 *   tmpfs; DEFAULT_POD_SHM_BYTES when neither says.
 * Everything here comes from the spec containerd wrote and the host's own mounts; nothing from the guest.
 */
export async function podTmpfsFor(m: OciMount): Promise<OciMount | undefined> {
  const flags = (m.options ?? []).filter((o) => POD_TMPFS_FLAGS.has(o));
  const emptyDir = await memoryEmptyDir(m);
  if (emptyDir) return podTmpfsMount(m.destination, { ...emptyDir, flags });
  if (path.posix.normalize(m.destination) !== "/dev/shm") return undefined;
  const sizeBytes = (await hostTmpfsSize(m)) ?? DEFAULT_POD_SHM_BYTES;
  return podTmpfsMount(m.destination, {
    key: POD_SHM_KEY,
    sizeBytes,
    flags: [...new Set([...flags, ...SHM_FLAGS])],
  });
}

async function memoryEmptyDir(m: OciMount): Promise<{ key: string; sizeBytes: number } | undefined> {
  if (!isBind(m) || !m.source || !path.isAbsolute(m.source)) return undefined;
  const source = path.normalize(m.source);
  if (path.basename(path.dirname(source)) !== EMPTY_DIR_PLUGIN) return undefined;
  // A volume name kubelet would not have made stays a plain bind.
  const key = emptyDirKey(path.basename(source));
  if (!key) return undefined;
  const sizeBytes = await tmpfsMountSize(source);
  return sizeBytes === undefined ? undefined : { key, sizeBytes };
}

/** The size asked for by a tmpfs mount's size= option, or of the host tmpfs a bind mounts. */
async function hostTmpfsSize(m: OciMount): Promise<number | undefined> {
  if (m.type === "tmpfs") {
    const opt = (m.options ?? []).find((o) => o.startsWith("size="));
    return opt ? parseTmpfsSize(opt.slice("size=".length)) : undefined;
  }
  return isBind(m) && m.source && path.isAbsolute(m.source) ? tmpfsMountSize(m.source) : undefined;
}

/** The size of the tmpfs mounted at dir (a mount point, not a directory on one), or undefined. */
async function tmpfsMountSize(dir: string): Promise<number | undefined> {
  const [fs, st, parent] = await Promise.all([
    statfs(dir).catch(() => undefined),
    stat(dir).catch(() => undefined),
    stat(path.dirname(dir)).catch(() => undefined),
  ]);
  if (!fs || !st?.isDirectory() || !parent || fs.type !== TMPFS_MAGIC || st.dev === parent.dev) return undefined;
  // An unlimited tmpfs (no blocks) stays a plain bind: the guest's memory is no place for an unbounded volume.
  return fs.blocks > 0 ? fs.blocks * fs.bsize : undefined;
}

/** tmpfs's size=<n>[kmg] in bytes; a percentage of the host's memory means nothing in the guest (undefined). */
export function parseTmpfsSize(value: string): number | undefined {
  const m = /^([0-9]{1,15})([kKmMgG]?)$/.exec(value);
  if (!m) return undefined;
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? "").toLowerCase()] ?? 1;
  const bytes = Number(m[1]) * unit;
  return bytes > 0 && Number.isSafeInteger(bytes) ? bytes : undefined;
}

function isBind(m: OciMount): boolean {
  return m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
}
