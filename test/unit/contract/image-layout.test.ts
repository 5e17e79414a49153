import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FS_OFFSET, imageHeader } from "../../../pipeline/rootfs/disk-layout.ts";
import { IMAGE_HEAD_BYTES, imageLayout, rootPartition } from "../../../runtime/contract/image-layout.ts";

describe("guest image layout, as the host reads it", () => {
  it("finds partition 1 and the fsdax info block in what the pipeline writes", () => {
    const head = imageHeader(64 * 1048576, "0c4e5a71-3f28-4d96-8b1e-7a52c9d0e6f4").subarray(0, IMAGE_HEAD_BYTES);
    assert.deepEqual(imageLayout(head), { partitioned: true, fsdax: true });
    assert.equal(FS_OFFSET % 4096, 0);
  });

  it("takes a bare ext4 image (no MBR, superblock magic at 1080) for a whole-device root without DAX", () => {
    const head = Buffer.alloc(IMAGE_HEAD_BYTES);
    head.writeUInt16LE(0xef53, 1080);
    assert.deepEqual(imageLayout(head), { partitioned: false, fsdax: false });
    assert.deepEqual(
      imageLayout(Buffer.alloc(100)),
      { partitioned: false, fsdax: false },
      "a file shorter than a sector",
    );
  });

  it("needs a used partition 1 entry, not just the boot signature", () => {
    const head = Buffer.alloc(IMAGE_HEAD_BYTES);
    head.writeUInt16LE(0xaa55, 510);
    assert.equal(imageLayout(head).partitioned, false);
    head[446 + 4] = 0x83;
    assert.equal(imageLayout(head).partitioned, true);
  });

  it("names partition 1 the kernel's way", () => {
    const both = { partitioned: true, fsdax: false };
    assert.equal(rootPartition("/dev/vda", both), "/dev/vda1");
    assert.equal(rootPartition("/dev/sda", both), "/dev/sda1");
    assert.equal(rootPartition("/dev/pmem0", both), "/dev/pmem0p1");
    assert.equal(rootPartition("/dev/vda", { partitioned: false, fsdax: false }), "/dev/vda");
  });
});
