import assert from "node:assert/strict";
import { chmod, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { sha256 } from "../../../pipeline/lib/hash.ts";
import { buildManifest, writeManifest } from "../../../pipeline/rootfs/manifest.ts";
import { listTree } from "../../../pipeline/rootfs/tree.ts";
import { tmpdir } from "./rootfs-fixture.ts";

describe("rootfs manifest", () => {
  let root: string;
  before(async () => {
    root = await tmpdir("manifest");
    await mkdir(path.join(root, "etc"));
    await mkdir(path.join(root, "tmp"));
    await chmod(path.join(root, "tmp"), 0o1777);
    await writeFile(path.join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    await chmod(path.join(root, "etc/passwd"), 0o644);
    await symlink("/sbin/init", path.join(root, "init"));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("lists every entry with path, type, mode, size, sha256 or link target, and the component versions", async () => {
    const m = await buildManifest(root, await listTree(root), { busybox: "BusyBox v1.35.0" }, 1700000000);
    assert.equal(m.schema, "kuasar-vmm/rootfs-manifest/v1");
    assert.equal(m.sourceDateEpoch, 1700000000);
    assert.deepEqual(m.components, { busybox: "BusyBox v1.35.0" });
    assert.deepEqual(m.entries, [
      { path: "/etc", type: "dir", mode: "0755", size: 0 },
      {
        path: "/etc/passwd",
        type: "file",
        mode: "0644",
        size: 30,
        sha256: sha256("root:x:0:0:root:/root:/bin/sh\n"),
      },
      { path: "/init", type: "symlink", mode: "0777", size: 10, target: "/sbin/init" },
      { path: "/tmp", type: "dir", mode: "01777", size: 0 },
    ]);
    assert.deepEqual(m.totals, { entries: 4, files: 1, directories: 2, symlinks: 1, bytes: 30 });
  });

  it("is written as stable, indented JSON", async () => {
    const m = await buildManifest(root, await listTree(root), {}, 1);
    const file = path.join(root, "..", `${path.basename(root)}.json`);
    await writeManifest(file, m);
    const text = await readFile(file, "utf8");
    await rm(file);
    assert.equal(text, `${JSON.stringify(m, null, 2)}\n`);
    assert.deepEqual(JSON.parse(text), m);
  });
});
