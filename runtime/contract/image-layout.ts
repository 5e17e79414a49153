// The guest image's layout, as the pipeline writes it (pipeline/rootfs/disk-layout.ts) and the host reads it to
// pick the root device. It is Kata's: an MBR whose partition 1 holds the ext4, and an NVDIMM PFN info block at
// 4 KiB that turns a pmem device of the image into an fsdax one (the guest then maps files straight from it).
// A bare ext4 image (no MBR) still boots, from the whole device and without DAX.

/** Bytes at the start of the image that say its layout. */
export const IMAGE_HEAD_BYTES = 8192;
/** Where libnvdimm looks for the PFN info block, and the signature of an fsdax one. */
export const PFN_INFO_OFFSET = 4096;
export const PFN_SIG = "NVDIMM_PFN_INFO\0";

export interface ImageLayout {
  /** An MBR with partition 1: the filesystem is partition 1 (vda1, pmem0p1). */
  partitioned: boolean;
  /** A PFN info block: a pmem device of the image supports DAX (mount -o dax). */
  fsdax: boolean;
}

/** A bare ext4 image (or none read): the whole device is the filesystem, without DAX. */
export const BARE_IMAGE: ImageLayout = Object.freeze({ partitioned: false, fsdax: false });

export function imageLayout(head: Buffer): ImageLayout {
  const mbr = head.length >= 512 && head.readUInt16LE(510) === 0xaa55 && head[446 + 4] !== 0;
  const sig = head.subarray(PFN_INFO_OFFSET, PFN_INFO_OFFSET + PFN_SIG.length).toString("latin1");
  return { partitioned: mbr, fsdax: sig === PFN_SIG };
}

/** The root device the guest mounts: partition 1 of the disk when the image has one ("p1" after a digit). */
export function rootPartition(device: string, layout: ImageLayout): string {
  if (!layout.partitioned) return device;
  return /\d$/.test(device) ? `${device}p1` : `${device}1`;
}
