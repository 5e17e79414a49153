import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  alignedPlacement,
  initialiseScript,
  misalignment,
  parseExtents,
  parseFreeBlocks,
  placementScript,
} from "../../../pipeline/rootfs/aligned-file.ts";

const DUMPE2FS = `Group 0: (Blocks 0-32767) csum 0xe68b
  Primary superblock at 0, Group descriptors at 1-1
  Free blocks: 1100-1107, 1200, 1300-32767
  Free inodes: 326-672
Group 1: (Blocks 32768-35583) csum 0xfbd4 [INODE_UNINIT]
  Free blocks: 32768-35583
  Free inodes: 673-1344
Group 2: (Blocks 35584-35600)
  Free blocks: 
`;

describe("aligned file placement", () => {
  it("reads dumpe2fs's free ranges and joins runs that cross a group boundary", () => {
    assert.deepEqual(parseFreeBlocks(DUMPE2FS), [
      { first: 1100, last: 1107 },
      { first: 1200, last: 1200 },
      { first: 1300, last: 35583 },
    ]);
    assert.throws(() => parseFreeBlocks("  Free blocks: 12-x\n"), /cannot read free block range '12-x'/);
  });

  it("starts on the first boundary with room and holds every free block below it", () => {
    const free = parseFreeBlocks(DUMPE2FS);
    assert.deepEqual(alignedPlacement(free, 26542, 512), {
      start: 1536,
      hold: [
        { first: 1100, last: 1107 },
        { first: 1200, last: 1200 },
        { first: 1300, last: 1535 },
      ],
    });
    // A boundary that is already free needs nothing held below it when nothing free is below.
    assert.deepEqual(alignedPlacement([{ first: 512, last: 2047 }], 1536, 512), { start: 512, hold: [] });
    assert.throws(() => alignedPlacement(free, 35000, 512), /no 35000 free blocks .* too small/);
  });

  it("accepts only a gapless run congruent to the boundary", () => {
    const ex = `Level Entries       Logical      Physical Length Flags
 0/ 0   1/  2     0 - 1023  1536 - 2559  1024
 0/ 0   2/  2  1024 - 1999  3584 - 4559   976 Uninit
`;
    const extents = parseExtents(ex);
    assert.deepEqual(extents, [
      { logical: 0, physical: 1536, length: 1024 },
      { logical: 1024, physical: 3584, length: 976 },
    ]);
    assert.equal(misalignment(extents, 2000, 512), undefined);
    assert.match(misalignment(extents, 2100, 512) ?? "", /blocks 2000-2099 of 2100 are not allocated/);
    assert.match(
      misalignment([{ logical: 0, physical: 2145, length: 100 }], 100, 512) ?? "",
      /logical block 0 is at physical block 2145/,
    );
    assert.match(
      misalignment(
        [
          { logical: 0, physical: 512, length: 100 },
          { logical: 383, physical: 1024, length: 10 },
        ],
        393,
        512,
      ) ?? "",
      /logical blocks 100-382 are a hole/,
    );
  });

  it("writes debugfs scripts that hold, allocate, size and release, then initialise each extent", () => {
    const script = placementScript({
      dir: "/usr/bin",
      name: "node",
      emptyFile: "/tmp/x/empty",
      size: 8193,
      blocks: 3,
      hold: [{ first: 1300, last: 1535 }],
    });
    assert.equal(
      script,
      'cd "/usr/bin"\nsetb 1300 236\nwrite "/tmp/x/empty" "node"\nfallocate "node" 0 2\nsif "node" size 8193\nfreeb 1300 236\n',
    );
    assert.throws(
      () => placementScript({ dir: "/usr/bin", name: 'a"b', emptyFile: "/e", size: 1, blocks: 1, hold: [] }),
      /cannot place 'a"b'/,
    );
    assert.equal(
      initialiseScript("/usr/bin/node", [
        { logical: 0, physical: 1536, length: 1024 },
        { logical: 1024, physical: 3584, length: 976 },
      ]),
      'extent_open "/usr/bin/node"\nroot\nreplace_node 0 1024 1536\nnext_sibling\nreplace_node 1024 976 3584\nextent_close\n',
    );
    assert.throws(() => initialiseScript("/f", []), /0 extents/);
  });
});
