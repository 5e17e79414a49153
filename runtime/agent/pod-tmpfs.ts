import path from "node:path";
import type { OciMount } from "../contract/oci.ts";
import { POD_SHM_KEY, type PodTmpfs, readPodTmpfsMount } from "../contract/pod-tmpfs.ts";
import { TaskError } from "./errors.ts";
import { KeyedSerial } from "./keyed-serial.ts";
import { ensureMount } from "./mounts.ts";

/** Where the agent keeps the pod's tmpfs mounts, one directory per key; never in the share. */
export const POD_TMPFS_DIR = "/run/kuasar/pod-tmpfs";

export interface PodTmpfsBinds {
  mounts: OciMount[];
  /** The pod tmpfs mounts the binds need, one per key (the first size given for a key wins). */
  tmpfs: PodTmpfs[];
}

/**
 * Turns the host's pod tmpfs mounts (runtime/contract/pod-tmpfs.ts) into binds of the agent's tmpfs for their key
 * under dir, so every container mounting one key shares one file system: the pod's /dev/shm, a memory-medium
 * emptyDir. Other mounts are kept. A malformed pod tmpfs mount is refused (InvalidArgument).
 */
export function podTmpfsBinds(mounts: OciMount[], dir = POD_TMPFS_DIR): PodTmpfsBinds {
  const tmpfs = new Map<string, PodTmpfs>();
  const out = mounts.map((m): OciMount => {
    let t: PodTmpfs | undefined;
    try {
      t = readPodTmpfsMount(m);
    } catch (err) {
      throw new TaskError("InvalidArgument", (err as Error).message);
    }
    if (!t) return m;
    if (!tmpfs.has(t.key)) tmpfs.set(t.key, t);
    return { destination: m.destination, type: "bind", source: path.join(dir, t.key), options: ["rbind", ...t.flags] };
  });
  return { mounts: out, tmpfs: [...tmpfs.values()] };
}

const serial = new KeyedSerial();

/**
 * Mounts the pod tmpfs for t under dir unless it is there already: its size is the one of its first container.
 * Containers created at once wait for one mount.
 */
export function ensurePodTmpfs(t: PodTmpfs, dir = POD_TMPFS_DIR): Promise<void> {
  const target = path.join(dir, t.key);
  const shm = t.key === POD_SHM_KEY;
  return serial.run(target, async () => {
    try {
      ensureMount({
        source: shm ? "shm" : "tmpfs",
        target,
        type: "tmpfs",
        // As containerd makes them for a runc pod: /dev/shm sticky and noexec, an emptyDir open to every user.
        options: ["nosuid", "nodev", ...(shm ? ["noexec", "mode=1777"] : ["mode=0777"]), `size=${t.sizeBytes}`],
        hint: "the guest kernel needs CONFIG_TMPFS",
      });
    } catch (err) {
      throw new TaskError("Internal", `the pod's ${t.key} tmpfs: ${(err as Error).message}`);
    }
  });
}
