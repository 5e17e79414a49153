import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import type { OciMount, OciSpec } from "../../../../runtime/contract/oci.ts";
import { prepareGuestBundle, releaseGuestBundle } from "../../../../runtime/sandboxer/storage/guest-bundle.ts";
import { parseTmpfsSize, podTmpfsFor } from "../../../../runtime/sandboxer/storage/memory-volumes.ts";
import { mountShare, shareLayout, unmountAllUnder } from "../../../../runtime/sandboxer/storage/share.ts";

let dir: string;
/** kubelet's layout: <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>. */
let emptyDirs: string;
const mounted: string[] = [];

async function tmpfs(p: string, size: string): Promise<string> {
  await mkdir(p, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", p]);
  mounted.push(p);
  return p;
}

const bind = (source: string, destination: string, ...options: string[]): OciMount => ({
  destination,
  type: "bind",
  source,
  options: ["rbind", "rprivate", ...options],
});

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "memory-volumes-"));
  emptyDirs = path.join(dir, "pods/uid-1/volumes/kubernetes.io~empty-dir");
  await tmpfs(path.join(emptyDirs, "cache"), "8m");
  await tmpfs(path.join(emptyDirs, "Not_A_Label"), "8m");
  await mkdir(path.join(emptyDirs, "on-disk"));
  await tmpfs(path.join(dir, "elsewhere"), "8m");
  await tmpfs(path.join(dir, "sandboxes/s1/shm"), "16m");
  await mkdir(path.join(dir, "plain-shm"));
});

after(async () => {
  for (const p of mounted.reverse()) execFileSync("umount", [p]);
  await rm(dir, { recursive: true, force: true });
});

test("a memory emptyDir becomes a pod tmpfs of its size, keyed by its volume name, with the container's flags", async () => {
  assert.deepEqual(await podTmpfsFor(bind(path.join(emptyDirs, "cache"), "/cache", "ro")), {
    destination: "/cache",
    type: "tmpfs",
    source: "kuasar-pod-tmpfs:empty-dir.cache",
    options: [`size=${8 << 20}`, "ro"],
  });
  // kubelet mounts one at /dev/shm to size it: the volume, not the pod's default shm.
  assert.equal(
    (await podTmpfsFor(bind(path.join(emptyDirs, "cache"), "/dev/shm")))?.source,
    "kuasar-pod-tmpfs:empty-dir.cache",
  );
});

test("what is not a memory emptyDir stays as it is: a disk emptyDir, another tmpfs, a name kubelet would not make", async () => {
  for (const source of [
    path.join(emptyDirs, "on-disk"),
    path.join(dir, "elsewhere"),
    path.join(emptyDirs, "Not_A_Label"),
    // A path that only looks like one once normalised: its parent is not the emptyDir plugin's directory.
    `${emptyDirs}/cache/..`,
    path.join(emptyDirs, "missing"),
  ]) {
    assert.equal(await podTmpfsFor(bind(source, "/data")), undefined, source);
  }
  assert.equal(await podTmpfsFor({ destination: "/tmp", type: "tmpfs", source: "tmpfs" }), undefined);
});

test("/dev/shm is the pod's one shm, sized as containerd's tmpfs asked, else 64 MiB", async () => {
  const shm = async (m: OciMount) => (await podTmpfsFor(m))?.options;
  assert.deepEqual(await shm(bind(path.join(dir, "sandboxes/s1/shm"), "/dev/shm", "rw")), [
    `size=${16 << 20}`,
    "rw",
    "nosuid",
    "nodev",
    "noexec",
  ]);
  assert.deepEqual(await shm(bind(path.join(dir, "plain-shm"), "/dev/shm")), [
    `size=${64 << 20}`,
    "nosuid",
    "nodev",
    "noexec",
  ]);
  const tmpfsShm = (size: string) => ({
    destination: "/dev/shm",
    type: "tmpfs",
    source: "shm",
    options: ["nosuid", `size=${size}`],
  });
  assert.deepEqual(await shm(tmpfsShm("65536k")), [`size=${64 << 20}`, "nosuid", "nodev", "noexec"]);
  assert.deepEqual(await shm(tmpfsShm("1g")), [`size=${1 << 30}`, "nosuid", "nodev", "noexec"]);
  assert.equal(
    (await shm(tmpfsShm("50%")))?.[0],
    `size=${64 << 20}`,
    "a share of the host's memory means nothing here",
  );
  assert.equal(parseTmpfsSize("0"), undefined);
  assert.equal(parseTmpfsSize("12x"), undefined);
});

test("prepareGuestBundle: a memory emptyDir and /dev/shm reach the guest as pod tmpfs mounts, never through the share", async () => {
  const share = shareLayout(path.join(dir, "sandbox"));
  await mountShare(share);
  await mkdir(path.join(dir, "bundle/rootfs"), { recursive: true });
  await writeFile(path.join(emptyDirs, "cache/host-data"), "the host's\n");
  const spec: OciSpec = {
    root: { path: "rootfs" },
    mounts: [
      bind(path.join(emptyDirs, "cache"), "/cache"),
      bind(path.join(dir, "sandboxes/s1/shm"), "/dev/shm"),
      bind(path.join(emptyDirs, "on-disk"), "/disk"),
    ],
  };
  await writeFile(path.join(dir, "bundle/config.json"), JSON.stringify(spec));
  let n = 0;
  const b = await prepareGuestBundle({
    share,
    containerId: "c1",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [],
    nextStorage: () => n++,
  });
  try {
    const written = JSON.parse(await readFile(path.join(share.mounts, "c1/config.json"), "utf8")) as OciSpec;
    const byDest = Object.fromEntries((written.mounts ?? []).map((m) => [m.destination, m]));
    assert.equal(byDest["/cache"]?.source, "kuasar-pod-tmpfs:empty-dir.cache");
    assert.equal(byDest["/dev/shm"]?.source, "kuasar-pod-tmpfs:shm");
    assert.equal(byDest["/disk"]?.source, "/run/kuasar/state/storage1", "a disk emptyDir still goes through the share");
    assert.deepEqual(b.storage, ["storage0", "storage1"], "the rootfs and the disk volume only");
  } finally {
    await releaseGuestBundle(share, b);
    await unmountAllUnder(path.join(dir, "sandbox"));
  }
  assert.deepEqual(await readdir(share.mounts), []);
});
