const MiB = 1048576;

export const BLOCK_SIZE = 4096;
/** Symlink targets shorter than this live in the inode ("fast" symlinks) and take no block. */
const FAST_SYMLINK_MAX = 59;

export interface Sizable {
  type: "dir" | "file" | "symlink";
  size: number;
}

export interface ImageSize {
  /** Bytes the entries occupy in 4 KiB blocks (a block per directory, none for fast symlinks). */
  contentBytes: number;
  bytes: number;
  inodes: number;
}

/**
 * Image size from content plus headroom, rounded up to whole MiB. The image is attached read-only (one file shared
 * by every VM; the guest writes to tmpfs), so the headroom only has to pay for ext4's own metadata, measured at
 * under 1 % of this tree (inode tables, bitmaps, group descriptors, extent and directory blocks), plus a little
 * room for a debugging read-write mount. Every spare MiB is hashed on each cache lookup.
 */
export function imageSize(entries: Sizable[], headroom = { fraction: 0.05, mib: 8 }): ImageSize {
  const blocks = (n: number) => Math.ceil(n / BLOCK_SIZE) * BLOCK_SIZE;
  let contentBytes = 0;
  for (const e of entries) {
    if (e.type === "file") contentBytes += blocks(e.size);
    else if (e.type === "dir") contentBytes += BLOCK_SIZE;
    else if (e.size > FAST_SYMLINK_MAX) contentBytes += BLOCK_SIZE;
  }
  const bytes = Math.ceil((contentBytes * (1 + headroom.fraction) + headroom.mib * MiB) / MiB) * MiB;
  // Entries + root + lost+found + spare; the default 1 inode per 16 KiB would spend MiBs on unused inode tables.
  const inodes = Math.ceil((entries.length + 2 + 1024) / 64) * 64;
  return { contentBytes, bytes, inodes };
}

/**
 * A debugfs script stamping every inode (root and lost+found included) with uid/gid 0 and the given time.
 * mke2fs -d copies atime and ctime from the staging files, and ctime cannot be set from user space, so without this
 * two builds of the same tree differ; it also makes the owners independent of who ran the build.
 */
export function normaliseScript(paths: string[], epoch: number): string {
  const lines: string[] = [];
  for (const p of ["/", "/lost+found", ...paths.map((x) => `/${x}`)]) {
    if (/[\s"\\]/.test(p))
      throw new Error(
        `cannot stamp '${p}' with debugfs: whitespace, quotes and backslashes are not supported in guest paths`,
      );
    for (const field of ["uid", "gid"]) lines.push(`sif "${p}" ${field} 0`);
    for (const field of ["atime", "mtime", "ctime", "crtime"]) lines.push(`sif "${p}" ${field} @${epoch}`);
  }
  return `${lines.join("\n")}\n`;
}
