import assert from "node:assert/strict";
import { createReadStream, createWriteStream } from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, test } from "node:test";
import { hashFile } from "../../pipeline/lib/hash.ts";
import { FS_OFFSET } from "../../pipeline/rootfs/disk-layout.ts";
import { artifact, busyboxBundle, requireArtifacts } from "../../testkit/daemon.ts";
import { guestRoot, runTask, Scene } from "../../testkit/scene.ts";

// kuasar.img as a read-only NVDIMM (disable_nvdimm = false): the guest finds the image's PFN info block, mounts
// partition 1 of the fsdax device with -o dax and runs node, runc and the containers' tools straight from the
// NVDIMM, so their pages are the host's page cache of the one image file, not a copy in each guest. Every VM maps
// that same file, so guest root writing to its NVDIMM must reach neither the file nor another VM.
let scene: Scene;
let address: string;
const image = artifact("kuasar.img");

before(async () => {
  requireArtifacts();
  scene = await Scene.start("vm-nvdimm-", (c) => `${c}disable_nvdimm = false\nkernel_params = "task.debug"\n`);
  address = await scene.pod("dax-a");
});

after(async () => {
  await scene?.close();
});

test("the root filesystem is DAX-mapped from the NVDIMM and containers run", { timeout: 240_000 }, async () => {
  const out = await guestRoot(
    scene.sandboxDir("dax-a"),
    'grep " / " /proc/mounts; ls /sys/bus/nd/devices; echo dax=$(cat /sys/block/pmem0/queue/dax); grep -E "^(Cached|MemTotal):" /proc/meminfo',
  );
  assert.match(out, /^\/dev\/(root|pmem0p1) \/ ext4 ro\b.*\bdax\b/m, `root is not mounted with dax:\n${out}`);
  assert.match(out, /^pfn\d+\.\d+$/m, `no PFN device was made from the info block:\n${out}`);
  assert.match(out, /^dax=1$/m);
  const r = await runTask(address, "c1", await busyboxBundle(path.join(scene.dir, "b1"), ["echo", "from-dax"]));
  assert.deepEqual(r, { status: 0, stdout: "from-dax\n" });
});

// The image puts node's blocks on 2 MiB boundaries and the kernel has FS_DAX_PMD, so node's code maps with 2 MiB
// pages. pagemap tells them apart: a 2 MiB page shows all 512 of its 4 KiB entries present, while 4 KiB pages show
// only those node touched, so some aligned 2 MiB run of node's code would be partly present.
test("node's code is mapped from the NVDIMM with 2 MiB pages", { timeout: 120_000 }, async () => {
  const script = [
    'const fs = require("fs");',
    'const code = fs.readFileSync("/proc/self/maps", "utf8").split("\\n").find((l) => / r-xp .* \\/usr\\/bin\\/node$/.test(l));',
    'const [lo, hi] = code.split(" ")[0].split("-").map((x) => parseInt(x, 16));',
    'const fd = fs.openSync("/proc/self/pagemap", "r");',
    "const H = 2097152, entries = Buffer.alloc(4096);",
    "let huge = 0, partial = 0;",
    "for (let at = Math.ceil(lo / H) * H; at + H <= hi; at += H) {",
    "  fs.readSync(fd, entries, 0, 4096, (at / 4096) * 8);",
    "  let present = 0;",
    "  for (let i = 0; i < 512; i++) if (entries.readBigUInt64LE(i * 8) >> 63n) present++;",
    "  if (present === 512) huge++; else if (present > 0) partial++;",
    "}",
    'console.log("huge=" + huge + " partial=" + partial);',
  ].join(" ");
  const out = await guestRoot(scene.sandboxDir("dax-a"), `node -e '${script}'`);
  const m = /^huge=(\d+) partial=(\d+)$/m.exec(out);
  assert.ok(m, `the guest did not report node's mappings:\n${out}`);
  assert.ok(Number(m[1]) > 0, `no 2 MiB page of node's code is mapped: ${m[0]}`);
  assert.equal(Number(m[2]), 0, `some 2 MiB runs of node's code are mapped with 4 KiB pages: ${m[0]}`);
});

// node keeps a private copy of the V8 part of its --snapshot-blob; the agent maps the image's startup data file over
// it once serving (runtime/agent/startup-data.ts), so those 3.3 MiB are the NVDIMM's pages, not this guest's RAM.
test("vmm-task's copy of its V8 startup data is mapped from the image", { timeout: 120_000 }, async () => {
  // The agent does it at idle priority once it serves: give it a few seconds.
  const maps =
    "for p in /proc/[0-9]*; do grep -q snapshot-blob $p/cmdline 2>/dev/null && grep vmm-task.v8-startup $p/maps; done";
  const mapped = (out: string) => out.split("\n").filter((l) => l.endsWith(" /usr/lib/vmm-task/vmm-task.v8-startup"));
  let out = await guestRoot(scene.sandboxDir("dax-a"), maps);
  for (let i = 0; i < 10 && mapped(out).length === 0; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    out = await guestRoot(scene.sandboxDir("dax-a"), maps);
  }
  const lines = mapped(out);
  assert.ok(lines.length > 0, `vmm-task maps no startup data file:\n${out}`);
  const bytes = lines.reduce((n, l) => {
    const [lo, hi] = l
      .split(" ")[0]!
      .split("-")
      .map((x) => Number.parseInt(x, 16));
    return n + hi! - lo!;
  }, 0);
  assert.ok(bytes > 3 * 1048576, `only ${bytes} bytes of the startup data are mapped:\n${out}`);
});

test("guest root writing over its NVDIMM changes neither the image file nor another VM's root", {
  timeout: 300_000,
}, async () => {
  const before = await hashFile(image);
  // Guest root lifts every read-only flag it controls, then overwrites the start of the filesystem (superblock, group
  // descriptors, inode tables) through the block device. Its own root is then garbage and its shell may die
  // mid-command (the writes land in its private copy): that VM's own loss.
  const unlocked = await guestRoot(
    scene.sandboxDir("dax-a"),
    "for r in /sys/bus/nd/devices/region*/read_only; do echo 0 > $r; done; cat /sys/bus/nd/devices/region*/read_only; " +
      "blockdev --setrw /dev/pmem0; blockdev --setrw /dev/pmem0p1; blockdev --getro /dev/pmem0p1",
  );
  assert.deepEqual(unlocked.trim().split("\n"), ["0", "0"], "the guest made its NVDIMM writable");
  await guestRoot(scene.sandboxDir("dax-a"), "dd if=/dev/zero of=/dev/pmem0p1 bs=4096 count=4096 conv=fsync").catch(
    () => "",
  );
  assert.equal(await hashFile(image), before, "the image file changed under the guest's writes");

  // A VM booted after the attack reads an intact image and runs a container.
  const other = await scene.pod("dax-b");
  const root = await guestRoot(scene.sandboxDir("dax-b"), 'grep " / " /proc/mounts; ls /usr/sbin/runc');
  assert.match(root, /^\/usr\/sbin\/runc$/m, root);
  const r = await runTask(other, "c2", await busyboxBundle(path.join(scene.dir, "b2"), ["echo", "intact"]));
  assert.deepEqual(r, { status: 0, stdout: "intact\n" });
});

test("a bare ext4 image, as older builds made it, boots from the whole NVDIMM without DAX", {
  timeout: 300_000,
}, async () => {
  const bare = path.join(scene.dir, "bare.img");
  await pipeline(createReadStream(image, { start: FS_OFFSET }), createWriteStream(bare));
  const old = await Scene.start("vm-nvdimm-bare-", (c) =>
    c.replace(/^image_path = .*$/m, `image_path = "${bare}"\nkernel_params = "task.debug"`),
  );
  try {
    await old.pod("bare");
    const out = await guestRoot(old.sandboxDir("bare"), 'cat /proc/cmdline; grep " / " /proc/mounts');
    assert.match(out, / root=\/dev\/pmem0 ro /, out);
    assert.match(out, /^\/dev\/root \/ ext4 ro,/m, out);
    assert.doesNotMatch(out, /dax/, out);
  } finally {
    await old.close();
  }
});
