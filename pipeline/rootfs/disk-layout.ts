/**
 * The guest image's layout around its ext4 filesystem (runtime/contract/image-layout.ts reads it), Kata's, so the same file boots
 * as a disk (root=/dev/vda1) and as an NVDIMM or virtio-pmem device mapped with DAX (root=/dev/pmem0p1):
 *
 *   0       MBR, partition 1 at FS_OFFSET         (what a disk shows: vda1)
 *   4 KiB   NVDIMM PFN info block, data at 2 MiB  (libnvdimm turns the namespace into pmem0 = the file from 2 MiB)
 *   2 MiB   MBR, partition 1 at FS_OFFSET - 2 MiB (what pmem0 shows: pmem0p1)
 *   4 MiB   ext4
 *
 * The info block is what gives a QEMU NVDIMM DAX: libnvdimm maps a raw ACPI namespace without struct pages, so ext4
 * cannot mount it with -o dax; a namespace that carries a PFN info block ("fsdax" mode) gets them. The block asks for
 * the struct pages in guest RAM (mode RAM, 64 bytes per 4 KiB page), not on the device, which all VMs share read-only.
 */

import { PFN_INFO_OFFSET, PFN_SIG } from "../../runtime/contract/image-layout.ts";

const MiB = 1048576;
const SECTOR = 512;
/** Where the PFN device's data (pmem0) starts in the file: 2 MiB keeps it PMD-aligned for huge DAX mappings. */
export const PMEM_DATA_OFFSET = 2 * MiB;
/** Where the filesystem starts in the file. */
export const FS_OFFSET = 4 * MiB;
/** The whole file is a multiple of this, so the namespace ends on the boundary libnvdimm maps memory in. */
export const SIZE_ALIGN = 2 * MiB;

const PFN_INFO_SIZE = 4096;
/** enum nd_pfn_mode: struct pages live in system RAM. */
const PFN_MODE_RAM = 1;
const PAGE_SIZE = 4096;
const STRUCT_PAGE_SIZE = 64;
const LINUX_PARTITION = 0x83;

/** Total file size for a filesystem of fsBytes. */
export function imageBytes(fsBytes: number): number {
  return Math.ceil((FS_OFFSET + fsBytes) / SIZE_ALIGN) * SIZE_ALIGN;
}

/**
 * The bytes in front of the filesystem (FS_OFFSET of them). uuid identifies the PFN device; it is fixed by the caller
 * so the image stays reproducible.
 */
export function imageHeader(fsBytes: number, uuid: string): Buffer {
  if (fsBytes <= 0 || fsBytes % SECTOR !== 0) throw new Error(`filesystem size ${fsBytes} is not whole sectors`);
  const total = imageBytes(fsBytes);
  const head = Buffer.alloc(FS_OFFSET);
  mbr(FS_OFFSET, fsBytes).copy(head, 0);
  pfnInfo(total, uuid).copy(head, PFN_INFO_OFFSET);
  mbr(FS_OFFSET - PMEM_DATA_OFFSET, fsBytes).copy(head, PMEM_DATA_OFFSET);
  return head;
}

/** A classic MBR with one Linux partition, LBA only (CHS set to the "beyond 8 GiB" marker). */
function mbr(startBytes: number, sizeBytes: number): Buffer {
  const b = Buffer.alloc(SECTOR);
  const entry = 446;
  b[entry] = 0x00; // not bootable
  b.writeUIntBE(0xfeffff, entry + 1, 3);
  b[entry + 4] = LINUX_PARTITION;
  b.writeUIntBE(0xfeffff, entry + 5, 3);
  b.writeUInt32LE(startBytes / SECTOR, entry + 8);
  b.writeUInt32LE(sizeBytes / SECTOR, entry + 12);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/** struct nd_pfn_sb, version 1.4, for a namespace of namespaceBytes (the whole file). */
function pfnInfo(namespaceBytes: number, uuid: string): Buffer {
  const b = Buffer.alloc(PFN_INFO_SIZE);
  b.write(PFN_SIG, 0, "latin1");
  uuidBytes(uuid).copy(b, 16);
  // parent_uuid (32) stays zero: a label-less namespace has the null uuid.
  b.writeUInt32LE(0, 48); // flags
  b.writeUInt16LE(1, 52); // version_major
  b.writeUInt16LE(4, 54); // version_minor
  b.writeBigUInt64LE(BigInt(PMEM_DATA_OFFSET), 56); // dataoff
  b.writeBigUInt64LE(BigInt((namespaceBytes - PMEM_DATA_OFFSET) / PAGE_SIZE), 64); // npfns
  b.writeUInt32LE(PFN_MODE_RAM, 72);
  b.writeUInt32LE(0, 76); // start_pad
  b.writeUInt32LE(0, 80); // end_trunc: the size is already 2 MiB-aligned
  b.writeUInt32LE(PMEM_DATA_OFFSET, 84); // align
  b.writeUInt32LE(PAGE_SIZE, 88);
  b.writeUInt16LE(STRUCT_PAGE_SIZE, 92);
  b.writeBigUInt64LE(fletcher64(b), PFN_INFO_SIZE - 8);
  return b;
}

/** libnvdimm's checksum: Fletcher-64 over the block's little-endian 32-bit words, its checksum field still zero. */
export function fletcher64(block: Buffer): bigint {
  let lo = 0;
  let hi = 0n;
  for (let i = 0; i < block.length; i += 4) {
    lo = (lo + block.readUInt32LE(i)) >>> 0;
    hi = (hi + BigInt(lo)) & 0xffffffffn;
  }
  return (hi << 32n) | BigInt(lo);
}

function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error(`not a uuid: ${uuid}`);
  return Buffer.from(hex, "hex");
}
