import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { busyboxBundle, requireArtifacts } from "../../testkit/daemon.ts";
import { bundleWithVolume, guestRoot, runTask, Scene, treeDigest } from "../../testkit/scene.ts";

// Guest root against the share: every name the host will work on in the sandbox's directory is planted first with
// a link into a host tree (the canary) or a FIFO, then the host does its normal work (a container with a volume and
// a file bind). Nothing outside the sandbox directory may change or be mounted on, the volume keeps its data, and
// the bystander sandbox keeps answering and running containers.
let scene: Scene;
let address: string;
const victim = () => scene.sandboxDir("victim");

before(async () => {
  requireArtifacts();
  scene = await Scene.start("sec-share-", (c) => `${c}kernel_params = "task.debug"\n`);
  address = await scene.pod("victim");
});

after(async () => {
  await scene?.close();
});

test("links and FIFOs planted by guest root at every name the host uses are never followed", {
  timeout: 400_000,
}, async () => {
  const canary = scene.canary;
  // Every storage<N> the host will allocate, the next container bundles, and the share files: links to host
  // directories and files, FIFOs (which would block the daemon's open), a large file at the top.
  const planted = await guestRoot(
    victim(),
    `${[
      "cd /run/kuasar/state",
      `for i in 0 1 2 3 4 5 6 7; do ln -s ${canary}/dir$((i % 2)) storage$i; done`,
      "for i in 8 9 10 11 12 13; do mkfifo storage$i; done",
      `ln -s ${canary}/bundle-target c1`,
      `ln -s ${canary}/etc c2`,
      `rm -f hosts && ln -s ${canary}/etc/passwd hosts`,
      "dd if=/dev/zero of=fill bs=1M count=32 2>&1 | tail -1",
      "ls -la /run/kuasar/state",
    ].join("; ")} 2>&1`,
  );
  const volume = await scene.volume("volume");
  try {
    await writeFile(path.join(scene.dir, "termination-log"), "");
    const bundle = await bundleWithVolume(
      path.join(scene.dir, "b1"),
      "echo from-guest > /vol/written; echo done > /dev/termination-log; cat /vol/data",
      volume.dir,
      path.join(scene.dir, "termination-log"),
    );
    // The escape is checked before the container's own outcome: a daemon that followed a link may still fail.
    const r = await runTask(address, "c1", bundle, { timeoutMs: 60_000 }).catch((e: Error) => e);
    assert.deepEqual(
      scene.watch.outside([victim(), scene.sandboxDir("bystander"), volume.dir]),
      [],
      `every mount the daemon made is inside a sandbox directory (guest said: ${planted})`,
    );
    await scene.assertUnharmed([volume.dir]);
    await volume.check();
    assert.ok(!(r instanceof Error), `the container ran: ${(r as Error).message}`);
    assert.equal(r.status, 0);
    assert.equal(r.stdout, "volume data\n");
    assert.equal(readFileSync(path.join(volume.dir, "written"), "utf8"), "from-guest\n", "a rw volume is writable");
    assert.equal(readFileSync(path.join(scene.dir, "termination-log"), "utf8"), "done\n", "a file bind is writable");
  } finally {
    volume.remove();
  }
});

test("the share's top level is read-only to guest root; inside a container rootfs the guest still writes", {
  timeout: 200_000,
}, async () => {
  const out = await guestRoot(
    victim(),
    "cd /run/kuasar/state; touch new-entry 2>&1; mkdir new-dir 2>&1; ls -A /run/kuasar/state | wc -l",
  );
  assert.match(out, /Read-only file system/);
  assert.equal(existsSync(path.join(victim(), "mounts/new-entry")), false);
  assert.deepEqual(
    (await readdir(path.join(victim(), "mounts"))).filter((n) => n.startsWith("new")),
    [],
  );
  const bundle = await busyboxBundle(path.join(scene.dir, "b3"), [
    "sh",
    "-c",
    "echo written > /rootfs-file && cat /rootfs-file",
  ]);
  const r = await runTask(address, "c3", bundle);
  assert.equal(r.stdout, "written\n");
  await scene.assertUnharmed();
});

test("a container bundle swapped for a link after Create is not followed at Delete", { timeout: 200_000 }, async () => {
  const before = await treeDigest(scene.canary);
  await mkdir(path.join(scene.dir, "empty-vol"), { recursive: true });
  const bundle = await bundleWithVolume(
    path.join(scene.dir, "b4"),
    "sleep 5",
    path.join(scene.dir, "empty-vol"),
    path.join(scene.dir, "termination-log"),
  );
  const run = runTask(address, "c4", bundle);
  await new Promise((r) => setTimeout(r, 1000));
  const out = await guestRoot(
    victim(),
    `cd /run/kuasar/state; rm -rf c4 2>&1; ln -sfn ${scene.canary}/etc c4 2>&1; ln -sf ${scene.canary}/file c4/config.json 2>&1; true`,
  );
  await run;
  assert.equal(await treeDigest(scene.canary), before, `the host tree is unchanged (guest said: ${out})`);
  await scene.assertUnharmed([path.join(scene.dir, "empty-vol")]);
});
