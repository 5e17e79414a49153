import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { imageSize, normaliseScript } from "../../../pipeline/rootfs/ext4.ts";

const MiB = 1048576;

describe("image size", () => {
  it("counts content in 4 KiB blocks: a block per directory, none for a fast symlink", () => {
    const s = imageSize([
      { type: "file", size: 1 },
      { type: "file", size: 4096 },
      { type: "file", size: 4097 },
      { type: "file", size: 0 },
      { type: "dir", size: 0 },
      { type: "symlink", size: 12 },
      { type: "symlink", size: 200 },
    ]);
    assert.equal(s.contentBytes, (1 + 1 + 2 + 0 + 1 + 0 + 1) * 4096);
  });

  it("adds the headroom and rounds up to whole MiB", () => {
    const files = [{ type: "file" as const, size: 100 * MiB }];
    assert.equal(imageSize(files, { fraction: 0.2, mib: 16 }).bytes, 136 * MiB);
    assert.equal(imageSize(files, { fraction: 0, mib: 0 }).bytes, 100 * MiB);
    assert.equal(imageSize([{ type: "file", size: 1 }], { fraction: 0, mib: 0 }).bytes, MiB);
    // the default: 5 % and 8 MiB, for a read-only image
    assert.equal(imageSize(files).bytes, 113 * MiB);
  });

  it("asks for inodes for every entry plus spares, in multiples of 64", () => {
    const s = imageSize(Array.from({ length: 300 }, () => ({ type: "file" as const, size: 1 })));
    assert.equal(s.inodes % 64, 0);
    assert.ok(s.inodes >= 300 + 2 + 1024);
  });
});

describe("debugfs normalisation script", () => {
  it("stamps owners and all four times of root, lost+found and every entry", () => {
    const script = normaliseScript(["bin", "bin/sh"], 1700000000).split("\n");
    for (const p of ["/", "/lost+found", "/bin", "/bin/sh"]) {
      for (const f of ["uid", "gid"]) assert.ok(script.includes(`sif "${p}" ${f} 0`), `${p} ${f}`);
      for (const f of ["atime", "mtime", "ctime", "crtime"]) assert.ok(script.includes(`sif "${p}" ${f} @1700000000`));
    }
  });

  it("refuses paths debugfs would split", () => {
    assert.throws(() => normaliseScript(["a b"], 0), /cannot stamp '\/a b' with debugfs/);
  });
});
