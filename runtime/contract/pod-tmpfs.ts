// Pod-wide tmpfs mounts (the pod's /dev/shm, memory-medium emptyDir volumes) as the host writes them into a
// translated spec and the agent reads them: a mount of type tmpfs whose source names a pod-scoped key and whose one
// option besides flags is its size. The agent backs every mount of one key with one tmpfs of its own, named by the key.
import type { OciMount } from "./oci.ts";

/** The source of a pod tmpfs mount is this prefix and the key. */
export const POD_TMPFS_SOURCE = "kuasar-pod-tmpfs:";
/** The key of the pod's /dev/shm. */
export const POD_SHM_KEY = "shm";
/** The pod's /dev/shm when nothing asked for another size: containerd's and Docker's default. */
export const DEFAULT_POD_SHM_BYTES = 64 * 1024 * 1024;
/** Mount flags a pod tmpfs mount may carry for the container's view (the rest is the agent's). */
export const POD_TMPFS_FLAGS: ReadonlySet<string> = new Set(["ro", "rw", "nosuid", "nodev", "noexec"]);

/** A Kubernetes volume name (RFC 1123 label), which also makes a safe file name. */
const DNS_LABEL = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const EMPTY_DIR_PREFIX = "empty-dir.";

export interface PodTmpfs {
  key: string;
  sizeBytes: number;
  /** Of POD_TMPFS_FLAGS. */
  flags: string[];
}

/** The key of a memory-medium emptyDir volume, or undefined when name is not a valid volume name. */
export function emptyDirKey(volume: string): string | undefined {
  return DNS_LABEL.test(volume) ? `${EMPTY_DIR_PREFIX}${volume}` : undefined;
}

/** Why key is not a pod tmpfs key ("shm" or "empty-dir.<volume name>"), or undefined when it is one. */
export function validatePodTmpfsKey(key: string): string | undefined {
  if (key === POD_SHM_KEY) return undefined;
  if (key.startsWith(EMPTY_DIR_PREFIX) && DNS_LABEL.test(key.slice(EMPTY_DIR_PREFIX.length))) return undefined;
  return (
    `pod tmpfs key ${JSON.stringify(key.slice(0, 100))} is invalid: it must be "${POD_SHM_KEY}" or ` +
    `"${EMPTY_DIR_PREFIX}<volume name>" with a volume name of lowercase letters, digits and inner '-' (at most 63)`
  );
}

/** The mount the host writes for destination. */
export function podTmpfsMount(destination: string, t: PodTmpfs): OciMount {
  return {
    destination,
    type: "tmpfs",
    source: `${POD_TMPFS_SOURCE}${t.key}`,
    options: [`size=${t.sizeBytes}`, ...t.flags],
  };
}

/**
 * The pod tmpfs a mount asks for, or undefined when it is not one (another source). Throws, naming the mount, when
 * it is one but malformed: an invalid key, a size that is not a positive whole number of bytes, an unknown option.
 */
export function readPodTmpfsMount(m: OciMount): PodTmpfs | undefined {
  if (!m.source?.startsWith(POD_TMPFS_SOURCE)) return undefined;
  const bad = (why: string) => new Error(`mount ${JSON.stringify(m.destination)}: ${why}`);
  if (m.type !== "tmpfs") throw bad(`a pod tmpfs mount must have type tmpfs, not ${JSON.stringify(m.type)}`);
  const key = m.source.slice(POD_TMPFS_SOURCE.length);
  const invalid = validatePodTmpfsKey(key);
  if (invalid) throw bad(invalid);
  let sizeBytes: number | undefined;
  const flags: string[] = [];
  for (const o of m.options ?? []) {
    const size = /^size=([1-9][0-9]{0,15})$/.exec(o);
    if (size && sizeBytes === undefined) sizeBytes = Number(size[1]);
    else if (POD_TMPFS_FLAGS.has(o)) flags.push(o);
    else throw bad(`option ${JSON.stringify(o.slice(0, 100))} is not allowed on a pod tmpfs mount`);
  }
  if (sizeBytes === undefined || !Number.isSafeInteger(sizeBytes)) {
    throw bad("a pod tmpfs mount needs one size=<bytes> option");
  }
  return { key, sizeBytes, flags };
}
