import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  FS_OFFSET,
  fletcher64,
  imageBytes,
  imageHeader,
  PMEM_DATA_OFFSET,
} from "../../../pipeline/rootfs/disk-layout.ts";

const MiB = 1048576;
const UUID = "0c4e5a71-3f28-4d96-8b1e-7a52c9d0e6f4";

function partition1(mbr: Buffer) {
  assert.equal(mbr.readUInt16LE(510), 0xaa55, "boot signature");
  return { type: mbr[446 + 4], start: mbr.readUInt32LE(446 + 8) * 512, size: mbr.readUInt32LE(446 + 12) * 512 };
}

describe("guest image layout (MBR + NVDIMM PFN info block + ext4)", () => {
  it("sizes the file to whole 2 MiB with the filesystem at 4 MiB", () => {
    assert.equal(imageBytes(100 * MiB), 104 * MiB);
    assert.equal(imageBytes(101 * MiB), 106 * MiB);
    assert.equal(imageBytes(4096), 6 * MiB);
  });

  it("points partition 1 at the filesystem from the file (vda1) and from the PFN device's data (pmem0p1)", () => {
    const fs = 123 * MiB;
    const head = imageHeader(fs, UUID);
    assert.equal(head.length, FS_OFFSET);
    assert.deepEqual(partition1(head.subarray(0, 512)), { type: 0x83, start: FS_OFFSET, size: fs });
    assert.deepEqual(partition1(head.subarray(PMEM_DATA_OFFSET, PMEM_DATA_OFFSET + 512)), {
      type: 0x83,
      start: FS_OFFSET - PMEM_DATA_OFFSET,
      size: fs,
    });
  });

  it("writes a version 1.4 fsdax info block at 4 KiB that libnvdimm accepts", () => {
    const fs = 123 * MiB;
    const sb = imageHeader(fs, UUID).subarray(4096, 8192);
    assert.equal(sb.subarray(0, 16).toString("latin1"), "NVDIMM_PFN_INFO\0");
    assert.equal(sb.subarray(16, 32).toString("hex"), UUID.replace(/-/g, ""));
    assert.ok(
      sb.subarray(32, 48).every((b) => b === 0),
      "parent uuid is the null uuid of a label-less namespace",
    );
    assert.deepEqual([sb.readUInt16LE(52), sb.readUInt16LE(54)], [1, 4]);
    assert.equal(sb.readBigUInt64LE(56), BigInt(PMEM_DATA_OFFSET), "dataoff");
    assert.equal(sb.readBigUInt64LE(64), BigInt((imageBytes(fs) - PMEM_DATA_OFFSET) / 4096), "npfns");
    assert.equal(sb.readUInt32LE(72), 1, "mode: struct pages in RAM, the device is read-only");
    assert.deepEqual([sb.readUInt32LE(76), sb.readUInt32LE(80)], [0, 0], "no start pad, no end truncation");
    assert.equal(sb.readUInt32LE(88), 4096);
    assert.equal(sb.readUInt16LE(92), 64);
    const zeroed = Buffer.from(sb);
    zeroed.writeBigUInt64LE(0n, 4088);
    assert.equal(sb.readBigUInt64LE(4088), fletcher64(zeroed));
  });

  it("checksums like the kernel's nd_fletcher64", () => {
    const one = Buffer.alloc(4096);
    one.writeUInt32LE(1, 0);
    // lo stays 1 after the first word; hi adds it once per word.
    assert.equal(fletcher64(one), (1024n << 32n) | 1n);
    const wrap = Buffer.alloc(4096);
    wrap.writeUInt32LE(0xffffffff, 0);
    wrap.writeUInt32LE(0xffffffff, 4);
    // lo wraps to 0xfffffffe after the second word; hi wraps modulo 2^32.
    const hi = (0xffffffffn + 0xfffffffen * 1023n) & 0xffffffffn;
    assert.equal(fletcher64(wrap), (hi << 32n) | 0xfffffffen);
  });

  it("refuses a filesystem that is not whole sectors", () => {
    assert.throws(() => imageHeader(1000, UUID), /not whole sectors/);
    assert.throws(() => imageHeader(4096, "nope"), /not a uuid/);
  });
});
