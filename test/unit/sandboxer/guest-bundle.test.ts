import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { MountSchema } from "../../../runtime/protos/gen/containerd/types/mount_pb.ts";
import {
  type OciSpec,
  prepareGuestBundle,
  releaseGuestBundle,
} from "../../../runtime/sandboxer/storage/guest-bundle.ts";

let dir: string;
let n: number;
const next = () => n++;

async function mountsUnder(p: string): Promise<string[]> {
  return (await readFile("/proc/self/mountinfo", "utf8"))
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m.startsWith(p));
}

beforeEach(async () => {
  n = 0;
  dir = await mkdtemp(path.join(os.tmpdir(), "guest-bundle-"));
  for (const d of ["share", "bundle", "lower", "upper", "work", "vol"]) await mkdir(path.join(dir, d));
  await writeFile(path.join(dir, "lower/hello"), "from the image\n");
  await writeFile(path.join(dir, "hosts"), "127.0.0.1 localhost\n");
  await writeFile(path.join(dir, "vol/data"), "volume\n");
  const spec: OciSpec = {
    ociVersion: "1.1.0",
    process: { args: ["sh"] },
    root: { path: "rootfs" },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/etc/hosts",
        type: "bind",
        source: path.join(dir, "hosts"),
        options: ["rbind", "rprivate", "rw"],
      },
      { destination: "/data", type: "bind", source: path.join(dir, "vol"), options: ["rbind", "ro"] },
      { destination: "/dev/shm", type: "bind", source: "/run/containerd/whatever/shm", options: ["rbind"] },
    ],
  };
  await writeFile(path.join(dir, "bundle/config.json"), JSON.stringify(spec));
});

afterEach(async () => {
  assert.deepEqual(await mountsUnder(dir), [], "every mount was released");
  await rm(dir, { recursive: true, force: true });
});

test("overlay rootfs and bind sources are mounted into the share and the spec points at guest paths", async () => {
  const b = await prepareGuestBundle({
    share: { host: path.join(dir, "share"), guest: "/run/kuasar/state" },
    containerId: "c1",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [
      create(MountSchema, {
        type: "overlay",
        source: "overlay",
        options: [`lowerdir=${dir}/lower`, `upperdir=${dir}/upper`, `workdir=${dir}/work`],
      }),
    ],
    nextStorage: next,
  });
  try {
    assert.equal(b.guestBundle, "/run/kuasar/state/c1");
    const spec = JSON.parse(await readFile(path.join(dir, "share/c1/config.json"), "utf8")) as OciSpec;
    assert.equal(spec.root?.path, "/run/kuasar/state/storage0");
    assert.equal(await readFile(path.join(dir, "share/storage0/hello"), "utf8"), "from the image\n");
    const byDest = Object.fromEntries((spec.mounts ?? []).map((m) => [m.destination, m]));
    assert.equal(byDest["/proc"]?.source, "proc");
    assert.equal(byDest["/etc/hosts"]?.source, "/run/kuasar/state/storage1");
    assert.equal(await readFile(path.join(dir, "share/storage1"), "utf8"), "127.0.0.1 localhost\n");
    assert.equal(byDest["/data"]?.source, "/run/kuasar/state/storage2");
    await assert.rejects(writeFile(path.join(dir, "share/storage2/x"), "no"), /EROFS/);
    assert.equal(byDest["/dev/shm"]?.type, "tmpfs");
    assert.equal((await mountsUnder(dir)).length, 3);
  } finally {
    await releaseGuestBundle(b);
  }
  assert.deepEqual(await readdir(path.join(dir, "share")), []);
});

test("a rootfs directory in the bundle is bind-mounted when containerd sends no mounts", async () => {
  await mkdir(path.join(dir, "bundle/rootfs"));
  await writeFile(path.join(dir, "bundle/rootfs/marker"), "bundle rootfs");
  const b = await prepareGuestBundle({
    share: { host: path.join(dir, "share"), guest: "/run/kuasar/state" },
    containerId: "c2",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [],
    nextStorage: next,
  });
  try {
    assert.equal(await readFile(path.join(dir, "share/storage0/marker"), "utf8"), "bundle rootfs");
  } finally {
    await releaseGuestBundle(b);
  }
});

test("a missing bind source fails with the mount named and leaves nothing mounted", async () => {
  await rm(path.join(dir, "vol"), { recursive: true });
  await mkdir(path.join(dir, "bundle/rootfs"));
  await assert.rejects(
    prepareGuestBundle({
      share: { host: path.join(dir, "share"), guest: "/run/kuasar/state" },
      containerId: "c3",
      hostBundle: path.join(dir, "bundle"),
      rootfs: [],
      nextStorage: next,
    }),
    /container c3: bind mount source .*\/vol \(for \/data\) does not exist/,
  );
  assert.deepEqual(await readdir(path.join(dir, "share")), []);
});

test("an unreadable spec names the file", async () => {
  await rm(path.join(dir, "bundle/config.json"));
  await assert.rejects(
    prepareGuestBundle({
      share: { host: path.join(dir, "share"), guest: "/g" },
      containerId: "c4",
      hostBundle: path.join(dir, "bundle"),
      rootfs: [],
      nextStorage: next,
    }),
    /container c4: cannot read OCI spec .*bundle\/config.json/,
  );
});
