import assert from "node:assert/strict";
import { copyFile, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Cache } from "../../../pipeline/lib/cache.ts";
import { hashFile } from "../../../pipeline/lib/hash.ts";
import { runStages, type StageOutcome } from "../../../pipeline/lib/runner.ts";
import { $quiet } from "../../../pipeline/lib/shell.ts";
import type { Stage } from "../../../pipeline/lib/stage.ts";
import { misalignment, parseExtents } from "../../../pipeline/rootfs/aligned-file.ts";
import { FS_OFFSET } from "../../../pipeline/rootfs/disk-layout.ts";
import type { ArtifactManifest } from "../../../pipeline/rootfs/manifest.ts";
import { IMAGE_UUID, imageStage } from "../../../pipeline/stages/image.ts";
import { initrdStage } from "../../../pipeline/stages/initrd.ts";
import { rootfsStage } from "../../../pipeline/stages/rootfs.ts";
import { fakeTaskOutput, options, repo, tmpdir } from "./rootfs-fixture.ts";

const ARTIFACTS = ["kuasar.img", "kuasar.img.manifest.json", "kuasar.initrd", "kuasar.initrd.manifest.json"];

/**
 * Two clean builds (task stand-in -> rootfs -> image, initrd) into two cache dirs must publish bit-identical
 * artifacts; this is the slow test of the set (~20-40 s a build on 2 cores).
 */
describe("guest rootfs, image and initrd", { timeout: 300_000 }, () => {
  let dir: string;
  let taskOut: string;
  const runs: { bin: string; outcomes: StageOutcome[]; seconds: number }[] = [];

  const build = async (name: string) => {
    const task: Stage = {
      name: "task",
      title: "vmm-task stand-in",
      deps: [],
      inputs: async (ctx) => ({ files: await ctx.treeDigest(taskOut) }),
      build: async (ctx) => {
        for (const f of await readdir(taskOut)) await copyFile(path.join(taskOut, f), path.join(ctx.out, f));
      },
      publish: {},
    };
    const bin = path.join(dir, `bin-${name}`);
    const t0 = performance.now();
    const outcomes = await runStages({
      repo,
      stages: [task, rootfsStage, imageStage, initrdStage],
      targets: ["rootfs", "image", "initrd"],
      options,
      cache: new Cache(path.join(dir, `cache-${name}`)),
      binDir: bin,
    });
    return { bin, outcomes, seconds: (performance.now() - t0) / 1000 };
  };

  before(async () => {
    dir = await tmpdir("repro");
    taskOut = await fakeTaskOutput(path.join(dir, "task"));
    runs.push(await build("a"));
    runs.push(await build("b"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("are bit-identical across two clean builds", async () => {
    for (const f of ARTIFACTS) {
      const [a, b] = await Promise.all(runs.map((r) => hashFile(path.join(r.bin, f))));
      assert.equal(a, b, `${f} differs between the two builds`);
    }
    for (const r of runs) assert.ok(r.outcomes.every((o) => !o.cached));
  });

  it("the image is a clean ext4 with fixed UUID, root-owned entries and fixed times", async () => {
    // e2fsprogs opens a filesystem inside a file with "<file>?offset=<bytes>".
    const img = `${path.join(runs[0]!.bin, "kuasar.img")}?offset=${FS_OFFSET}`;
    await $quiet`e2fsck -f -n ${img}`;
    const head = (await $quiet`dumpe2fs -h ${img}`).stdout;
    assert.match(head, new RegExp(`Filesystem UUID:\\s+${IMAGE_UUID}`));
    assert.doesNotMatch(head, /has_journal/);
    const stat = async (p: string) => (await $quiet`debugfs -R ${`stat ${p}`} ${img}`).stdout;
    const init = await stat("/sbin/init");
    assert.match(init, /User:\s+0\s+Group:\s+0/);
    assert.match(init, /Mode:\s+0755/);
    for (const t of ["ctime", "atime", "mtime", "crtime"]) assert.match(init, new RegExp(`${t}: 0x6553f100:`));
    assert.match(await stat("/tmp"), /Mode:\s+01777/);
    assert.match(await stat("/init"), /Fast link dest: "\/sbin\/init"/);
    const dump = (await $quiet`debugfs -R ${"cat /usr/lib/vmm-task/vmm-task.js"} ${img}`).stdout;
    assert.equal(dump, 'console.log("vmm-task");\n');
  });

  it("node sits in one initialised run of blocks from a 2 MiB boundary, byte for byte", async () => {
    const img = `${path.join(runs[0]!.bin, "kuasar.img")}?offset=${FS_OFFSET}`;
    const manifest = JSON.parse(
      await readFile(path.join(runs[0]!.bin, "kuasar.img.manifest.json"), "utf8"),
    ) as ArtifactManifest;
    const node = manifest.entries.find((e) => e.path === "/usr/bin/node")!;
    const listing = (await $quiet`debugfs -R ${"ex /usr/bin/node"} ${img}`).stdout;
    const extents = parseExtents(listing);
    const blocks = Math.ceil(node.size / 4096);
    assert.equal(misalignment(extents, blocks, 512), undefined);
    assert.equal(extents.length, 1);
    assert.doesNotMatch(listing, /Uninit/, "an unwritten extent reads as zeros");
    const out = path.join(dir, "node.dump");
    await $quiet`debugfs -R ${`dump /usr/bin/node ${out}`} ${img}`;
    assert.equal(await hashFile(out), node.sha256);
  });

  it("the initrd is a gzip'd newc cpio with /init -> /sbin/init and the whole tree", async () => {
    const initrd = path.join(runs[0]!.bin, "kuasar.initrd");
    const listing = (await $quiet`gzip -dc ${initrd} | cpio -itv --quiet`).stdout.trimEnd().split("\n");
    const names = listing.map((l) => l.replace(/^.* \d{4} /, ""));
    for (const want of ["init -> /sbin/init", "sbin/init", "usr/bin/node", "usr/sbin/runc", "bin/sh -> /bin/busybox"]) {
      assert.ok(names.includes(want), `${want} missing from the initrd`);
    }
    assert.ok(
      listing.every((l) => / root +root /.test(l)),
      "every entry is owned by root",
    );
  });

  it("the manifests describe the artifact, the components and every file", async () => {
    const img = JSON.parse(
      await readFile(path.join(runs[0]!.bin, "kuasar.img.manifest.json"), "utf8"),
    ) as ArtifactManifest;
    assert.equal(img.artifact.sha256, await hashFile(path.join(runs[0]!.bin, "kuasar.img")));
    assert.deepEqual(Object.keys(img.components).sort(), ["busybox", "e2fsprogs", "gzip", "node", "runc"]);
    assert.match(img.components.runc ?? "", /^runc version /);
    const byPath = new Map(img.entries.map((e) => [e.path, e]));
    assert.equal(byPath.get("/sbin/init")?.sha256, await hashFile(path.join(taskOut, "init")));
    assert.equal(byPath.get("/init")?.target, "/sbin/init");
    assert.equal(byPath.get("/etc/resolv.conf")?.size, 0);
    assert.equal(byPath.get("/tmp")?.mode, "01777");
    for (const p of [
      "/usr/lib/vmm-task/vsock.node",
      "/lib64/ld-linux-x86-64.so.2",
      "/lib/x86_64-linux-gnu/libseccomp.so.2",
    ]) {
      assert.ok(byPath.has(p), `${p} missing from the manifest`);
    }
    const initrd = JSON.parse(
      await readFile(path.join(runs[0]!.bin, "kuasar.initrd.manifest.json"), "utf8"),
    ) as ArtifactManifest;
    assert.equal(initrd.artifact.sha256, await hashFile(path.join(runs[0]!.bin, "kuasar.initrd")));
    assert.deepEqual(initrd.entries, img.entries);
  });

  it("a no-op rebuild takes everything from the cache", async (t) => {
    const again = await build("a");
    assert.ok(
      again.outcomes.every((o) => o.cached),
      again.outcomes.map((o) => `${o.stage}: ${o.cached}`).join(", "),
    );
    t.diagnostic(
      `builds: ${runs.map((r) => `${r.seconds.toFixed(1)} s`).join(", ")}; no-op: ${again.seconds.toFixed(2)} s (${again.outcomes.map((o) => `${o.stage} ${o.seconds.toFixed(2)} s`).join(", ")})`,
    );
  });
});
