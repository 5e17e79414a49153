// Disks the host hot-plugs for a container and how it tells the guest about them. They ride in the rootfs list of
// containerd's CreateTaskRequest (no proto change): one entry per disk, with a type no file system has, so an agent
// that did not know them would fail the create rather than mount something else.

import path from "node:path";

/** A disk serial, made by the host: the device id in the VMM too; virtio-blk keeps 20 bytes of it. */
export const DISK_SERIAL = /^[A-Za-z0-9_-]{1,20}$/;

/** Mount.type of the container's rootfs on a disk: source is the serial, options the file system's own. */
export const ROOTFS_DISK_TYPE = "kuasar.virtio-blk.rootfs";
/** Mount.type of a raw block device for the container: source is the serial, target the path in the container. */
export const DEVICE_DISK_TYPE = "kuasar.virtio-blk.device";

/** Bounds on what one create carries (each disk takes a hot-plug slot anyway). */
export const MAX_DISKS = 32;
const MAX_OPTIONS = 32;
const MAX_OPTION_BYTES = 256;
const MAX_PATH_BYTES = 4096;
const FS_TYPE = /^[a-z0-9]{1,16}$/;
// A mount option: no comma (mount(8) joins them with commas), no space or control character.
const OPTION = /^[A-Za-z0-9_=.:/+@-]+$/;

export type GuestDisk =
  | { kind: "rootfs"; serial: string; fsType: string; options: string[] }
  | { kind: "device"; serial: string; containerPath: string };

/** The shape of containerd's Mount message, which both sides use. */
export interface MountEntry {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export function diskMount(d: GuestDisk): MountEntry {
  return d.kind === "rootfs"
    ? { type: ROOTFS_DISK_TYPE, source: d.serial, target: "", options: [`fstype=${d.fsType}`, ...d.options] }
    : { type: DEVICE_DISK_TYPE, source: d.serial, target: d.containerPath, options: [] };
}

/** Why a disk's fields are unusable, or undefined; shared by both sides so neither sends what the other refuses. */
export function diskProblem(d: GuestDisk): string | undefined {
  if (!DISK_SERIAL.test(d.serial)) return `disk serial '${d.serial}' must be 1-20 characters from [A-Za-z0-9_-]`;
  if (d.kind === "rootfs") {
    if (!FS_TYPE.test(d.fsType)) return `disk ${d.serial}: file system type '${d.fsType}' must match ${FS_TYPE}`;
    if (d.options.length > MAX_OPTIONS) return `disk ${d.serial}: more than ${MAX_OPTIONS} mount options`;
    const bad = d.options.find((o) => o.length > MAX_OPTION_BYTES || !OPTION.test(o));
    if (bad !== undefined) return `disk ${d.serial}: mount option '${bad}' is not allowed (characters ${OPTION})`;
    return undefined;
  }
  const p = d.containerPath;
  if (
    p.length > MAX_PATH_BYTES ||
    !p.startsWith("/") ||
    p === "/" ||
    path.posix.normalize(p) !== p ||
    p.includes("\0")
  ) {
    return `disk ${d.serial}: container path '${p}' must be an absolute, normalized path below /`;
  }
  return undefined;
}

/**
 * The disks in a CreateTaskRequest's rootfs list, checked; any other entry is refused (the host mounts everything
 * else itself). Throws naming the entry that is wrong.
 */
export function parseDiskMounts(mounts: MountEntry[]): GuestDisk[] {
  if (mounts.length > MAX_DISKS) throw new Error(`${mounts.length} disks in one create; at most ${MAX_DISKS}`);
  const disks = mounts.map((m, i): GuestDisk => {
    if (m.type === ROOTFS_DISK_TYPE) {
      const [fst, ...options] = m.options;
      if (!fst?.startsWith("fstype=")) throw new Error(`rootfs entry ${i}: the first option must be fstype=<type>`);
      return { kind: "rootfs", serial: m.source, fsType: fst.slice("fstype=".length), options };
    }
    if (m.type === DEVICE_DISK_TYPE) return { kind: "device", serial: m.source, containerPath: m.target };
    throw new Error(
      `rootfs entry ${i} has type '${m.type}'; only ${ROOTFS_DISK_TYPE} and ${DEVICE_DISK_TYPE} are known`,
    );
  });
  for (const d of disks) {
    const problem = diskProblem(d);
    if (problem) throw new Error(problem);
  }
  if (disks.filter((d) => d.kind === "rootfs").length > 1) throw new Error("more than one rootfs disk");
  const serials = new Set(disks.map((d) => d.serial));
  if (serials.size !== disks.length) throw new Error("a disk serial appears twice");
  return disks;
}
