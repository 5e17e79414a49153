/**
 * Places a file in the ext4 image so that every 2 MiB of it sits on a 2 MiB boundary of the device: then a guest
 * that maps the image with DAX maps that file with huge pages (one fault per 2 MiB instead of one per 4 KiB).
 * `mke2fs -d` cannot do that: it packs files one after another and turns every all-zero block into a hole, so
 * the file's blocks drift against its offsets. Instead the file is left out of `mke2fs -d`, then debugfs creates
 * it empty and fallocates it in one run of blocks starting on a boundary (the free blocks below are marked used
 * for that one command so the allocator cannot start lower), and its bytes are written into those blocks.
 */

/** A run of blocks, both ends included. */
export interface BlockRange {
  first: number;
  last: number;
}

/** One extent of a file: logical blocks [logical, logical + length) at physical blocks from physical. */
export interface Extent {
  logical: number;
  physical: number;
  length: number;
}

/** The free block ranges of every group, from `dumpe2fs` ("Free blocks: 31438-32767, 32770"). */
export function parseFreeBlocks(dumpe2fs: string): BlockRange[] {
  const ranges: BlockRange[] = [];
  for (const m of dumpe2fs.matchAll(/^\s+Free blocks: (.*)$/gm)) {
    for (const part of m[1]!.split(",")) {
      const t = part.trim();
      if (t === "") continue;
      const r = /^(\d+)(?:-(\d+))?$/.exec(t);
      if (!r) throw new Error(`dumpe2fs: cannot read free block range '${t}'`);
      ranges.push({ first: Number(r[1]), last: Number(r[2] ?? r[1]) });
    }
  }
  ranges.sort((a, b) => a.first - b.first);
  // dumpe2fs lists free blocks per group; a run crossing a group boundary is one run to the allocator.
  const merged: BlockRange[] = [];
  for (const r of ranges) {
    const prev = merged.at(-1);
    if (prev && r.first <= prev.last + 1) prev.last = Math.max(prev.last, r.last);
    else merged.push({ ...r });
  }
  return merged;
}

/**
 * The lowest block on an `align` boundary followed by `blocks` free ones, and the free ranges below it that must
 * be held for the allocation to start there. Throws when no such run exists (the image is too small).
 */
export function alignedPlacement(
  free: BlockRange[],
  blocks: number,
  align: number,
): { start: number; hold: BlockRange[] } {
  for (const r of free) {
    const start = Math.ceil(r.first / align) * align;
    if (start + blocks - 1 > r.last) continue;
    const hold: BlockRange[] = [];
    for (const below of free) {
      if (below.first >= start) break;
      hold.push({ first: below.first, last: Math.min(below.last, start - 1) });
    }
    return { start, hold };
  }
  throw new Error(`no ${blocks} free blocks starting on a ${align}-block boundary: the image is too small`);
}

/** The extents `debugfs -R "ex <file>"` lists (leaf lines: "0/ 0 1/ 1 0 - 26541 4608 - 31149 26542 ..."). */
export function parseExtents(ex: string): Extent[] {
  const extents: Extent[] = [];
  for (const m of ex.matchAll(/^\s*\d+\/\s*\d+\s+\d+\/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)/gm)) {
    extents.push({ logical: Number(m[1]), physical: Number(m[3]), length: Number(m[5]) });
  }
  return extents;
}

/**
 * Why the extents do not map blocks [0, blocks) contiguously with every logical block congruent to its physical
 * one modulo align (holes and shifted runs break huge mappings), or undefined when they do.
 */
export function misalignment(extents: Extent[], blocks: number, align: number): string | undefined {
  let next = 0;
  for (const e of [...extents].sort((a, b) => a.logical - b.logical)) {
    if (e.logical !== next) return `logical blocks ${next}-${e.logical - 1} are a hole`;
    if ((e.physical - e.logical) % align !== 0) {
      return `logical block ${e.logical} is at physical block ${e.physical}, not on a ${align}-block boundary`;
    }
    next = e.logical + e.length;
  }
  return next === blocks ? undefined : `blocks ${next}-${blocks - 1} of ${blocks} are not allocated`;
}

/**
 * The debugfs script that creates `name` in `dir` from an empty local file (its mode is taken from there) and
 * allocates `blocks` initialised blocks to it from `start`, holding the free ranges below start meanwhile.
 * fallocate on an empty file allocates past its end, which debugfs writes as zeroed, initialised blocks; the size
 * is set afterwards.
 */
export function placementScript(p: {
  dir: string;
  name: string;
  emptyFile: string;
  size: number;
  blocks: number;
  hold: BlockRange[];
}): string {
  for (const s of [p.dir, p.name, p.emptyFile]) {
    if (/[\s"\\]/.test(s)) throw new Error(`cannot place '${s}' with debugfs: whitespace, quotes and backslashes`);
  }
  const held = p.hold.map((r) => `${r.first} ${r.last - r.first + 1}`);
  return [
    `cd "${p.dir}"`,
    ...held.map((h) => `setb ${h}`),
    `write "${p.emptyFile}" "${p.name}"`,
    `fallocate "${p.name}" 0 ${p.blocks - 1}`,
    `sif "${p.name}" size ${p.size}`,
    ...held.map((h) => `freeb ${h}`),
    "",
  ].join("\n");
}

/**
 * The debugfs script that marks the extents of `file` initialised. fallocate leaves them unwritten, which reads as
 * zeros whatever the blocks hold; the file's bytes are written into the blocks directly. Only an extent tree held
 * in the inode (up to 4 extents, 512 MiB) is handled, which is all misalignment() lets through for such files.
 */
export function initialiseScript(file: string, extents: Extent[]): string {
  if (extents.length === 0 || extents.length > 4) {
    throw new Error(`${file}: ${extents.length} extents; expected 1 to 4 in the inode`);
  }
  const lines = [`extent_open "${file}"`, "root"];
  extents.forEach((e, i) => {
    if (i > 0) lines.push("next_sibling");
    lines.push(`replace_node ${e.logical} ${e.length} ${e.physical}`);
  });
  lines.push("extent_close", "");
  return lines.join("\n");
}
