import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { OciSpec } from "../../../../runtime/contract/oci.ts";
import { MountSchema } from "../../../../runtime/protos/gen/containerd/types/mount_pb.ts";
import { type DiskHost, devNumber } from "../../../../runtime/sandboxer/storage/block.ts";
import {
  prepareGuestBundle,
  releaseGuestBundle,
  UnsupportedSpec,
} from "../../../../runtime/sandboxer/storage/guest-bundle.ts";
import {
  mountShare,
  type ShareLayout,
  shareLayout,
  unmountAllUnder,
} from "../../../../runtime/sandboxer/storage/share.ts";

let dir: string;
let share: ShareLayout;
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
  for (const d of ["bundle", "lower", "upper", "work", "vol"]) await mkdir(path.join(dir, d));
  share = shareLayout(path.join(dir, "sandbox"));
  await mountShare(share);
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
  await unmountAllUnder(share.mounts.replace(/\/mounts$/, ""));
  assert.deepEqual(await mountsUnder(dir), [], "every mount was released");
  await rm(dir, { recursive: true, force: true });
});

const overlay = () =>
  create(MountSchema, {
    type: "overlay",
    source: "overlay",
    options: [`lowerdir=${dir}/lower`, `upperdir=${dir}/upper`, `workdir=${dir}/work`],
  });

/** What the guest sees: shared/, read-only at its top. */
const guestView = (name: string) => path.join(share.shared, name);

test("rootfs and bind sources are mounted in the host's tree, seen in the guest's view, spec at guest paths", async () => {
  const b = await prepareGuestBundle({
    share,
    containerId: "c1",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [overlay()],
    nextStorage: next,
  });
  try {
    assert.equal(b.guestBundle, "/run/kuasar/state/c1");
    const spec = JSON.parse(await readFile(guestView("c1/config.json"), "utf8")) as OciSpec;
    assert.equal(spec.root?.path, "/run/kuasar/state/storage0");
    assert.equal(await readFile(guestView("storage0/hello"), "utf8"), "from the image\n");
    await writeFile(guestView("storage0/written-in-guest"), "rootfs is writable inside");
    const byDest = Object.fromEntries((spec.mounts ?? []).map((m) => [m.destination, m]));
    assert.equal(byDest["/proc"]?.source, "proc");
    assert.equal(byDest["/etc/hosts"]?.source, "/run/kuasar/state/storage1");
    assert.equal(await readFile(guestView("storage1"), "utf8"), "127.0.0.1 localhost\n");
    assert.equal(byDest["/data"]?.source, "/run/kuasar/state/storage2");
    await assert.rejects(
      writeFile(guestView("storage2/x"), "no"),
      /EROFS/,
      "a read-only bind is read-only in the guest's view",
    );
    assert.equal(byDest["/dev/shm"]?.type, "tmpfs");
    // The pod's files the spec lacks come from the guest's copies; its own /etc/hosts (kubelet's) is kept.
    assert.deepEqual(byDest["/etc/resolv.conf"], {
      destination: "/etc/resolv.conf",
      type: "bind",
      source: "/run/kuasar/pod/resolv.conf",
      options: ["rbind", "rprivate", "rw"],
    });
    assert.equal(byDest["/etc/hostname"]?.source, "/run/kuasar/pod/hostname");
    assert.equal(spec.mounts?.filter((m) => m.destination === "/etc/hosts").length, 1);
    // The top of the guest's view is read-only: no entry the host works on can be made, replaced or removed.
    await assert.rejects(writeFile(guestView("storage9"), "planted"), /EROFS/);
    await assert.rejects(rm(guestView("c1/config.json")), /EROFS/);
  } finally {
    await releaseGuestBundle(share, b);
  }
  assert.deepEqual(await readdir(share.mounts), []);
  assert.deepEqual(await readdir(share.shared), []);
  assert.deepEqual(await mountsUnder(`${share.mounts}/`), []);
  assert.deepEqual(await mountsUnder(`${share.shared}/`), []);
});

test("a host volume with a submount: non-recursive read-only, mounts added later show, teardown leaves the host's own", async () => {
  // On a systemd host every mount is shared: a plain unmount of the copy's submounts would take the host's with it.
  execFileSync("mount", ["--bind", `${dir}/vol`, `${dir}/vol`]);
  execFileSync("mount", ["--make-shared", `${dir}/vol`]);
  await mkdir(path.join(dir, "vol/sub"));
  execFileSync("mount", ["-t", "tmpfs", "vol-sub", `${dir}/vol/sub`]);
  await writeFile(path.join(dir, "vol/sub/keep"), "host data\n");
  await mkdir(path.join(dir, "bundle/rootfs"));
  const b = await prepareGuestBundle({
    share,
    containerId: "v1",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [],
    nextStorage: next,
  });
  try {
    const data = guestView("storage2");
    await assert.rejects(writeFile(path.join(data, "x"), "no"), /EROFS/);
    await writeFile(path.join(data, "sub/from-guest"), "a writable submount stays writable");
    await mkdir(path.join(dir, "vol/later"));
    execFileSync("mount", ["-t", "tmpfs", "vol-later", `${dir}/vol/later`]);
    await writeFile(path.join(dir, "vol/later/f"), "mounted after the container started\n");
    assert.equal(await readFile(path.join(data, "later/f"), "utf8"), "mounted after the container started\n");
  } finally {
    await releaseGuestBundle(share, b);
  }
  assert.equal(
    await readFile(path.join(dir, "vol/sub/keep"), "utf8"),
    "host data\n",
    "the host's submount is still there",
  );
  assert.equal(await readFile(path.join(dir, "vol/later/f"), "utf8"), "mounted after the container started\n");
  for (const view of [share.mounts, share.shared, share.staging]) assert.deepEqual(await mountsUnder(`${view}/`), []);
  execFileSync("umount", ["-R", `${dir}/vol`]);
});

test("a storage name already taken (a counter reset by a crash) is skipped, never reused", async () => {
  await mkdir(path.join(dir, "bundle/rootfs"));
  await writeFile(path.join(share.mounts, "storage0"), "left over");
  const b = await prepareGuestBundle({
    share,
    containerId: "c2",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [],
    nextStorage: next,
  });
  try {
    assert.deepEqual(b.storage.slice(0, 1), ["storage1"]);
    assert.equal(await readFile(path.join(share.mounts, "storage0"), "utf8"), "left over");
  } finally {
    await releaseGuestBundle(share, b);
  }
});

test("a missing bind source fails with the mount named and leaves nothing mounted", async () => {
  await rm(path.join(dir, "vol"), { recursive: true });
  await mkdir(path.join(dir, "bundle/rootfs"));
  await assert.rejects(
    prepareGuestBundle({
      share,
      containerId: "c3",
      hostBundle: path.join(dir, "bundle"),
      rootfs: [],
      nextStorage: next,
    }),
    /container c3: bind mount source .*\/vol \(for \/data\) does not exist/,
  );
  assert.deepEqual(await readdir(share.mounts), []);
  assert.deepEqual(await readdir(share.staging), []);
});

test("bidirectional propagation is refused before anything is mounted; ro binds are rw in the guest's spec, rro not", async () => {
  await mkdir(path.join(dir, "bundle/rootfs"));
  const specFile = path.join(dir, "bundle/config.json");
  const spec = JSON.parse(await readFile(specFile, "utf8")) as OciSpec;
  const withMount = async (m: OciSpec["mounts"]) =>
    writeFile(specFile, JSON.stringify({ ...spec, mounts: [...(spec.mounts ?? []), ...(m ?? [])] }));
  await withMount([{ destination: "/shared", type: "bind", source: `${dir}/vol`, options: ["rbind", "rshared"] }]);
  await assert.rejects(
    prepareGuestBundle({
      share,
      containerId: "p1",
      hostBundle: path.join(dir, "bundle"),
      rootfs: [],
      nextStorage: next,
    }),
    (e: Error) =>
      e instanceof UnsupportedSpec && /mount \/shared: Bidirectional propagation cannot be honoured/.test(e.message),
  );
  assert.deepEqual(await readdir(share.mounts), [], "nothing was mounted or written");

  await mkdir(path.join(dir, "vol/sub"));
  execFileSync("mount", ["-t", "tmpfs", "vol-sub", `${dir}/vol/sub`]);
  await withMount([{ destination: "/rro", type: "bind", source: `${dir}/vol`, options: ["rbind", "ro", "rro"] }]);
  const b = await prepareGuestBundle({
    share,
    containerId: "p2",
    hostBundle: path.join(dir, "bundle"),
    rootfs: [],
    nextStorage: next,
  });
  try {
    const guest = JSON.parse(await readFile(guestView("p2/config.json"), "utf8")) as OciSpec;
    const byDest = Object.fromEntries((guest.mounts ?? []).map((m) => [m.destination, m]));
    assert.deepEqual(byDest["/data"]?.options, ["rbind", "rw"], "the host's mount is what keeps it read-only");
    assert.deepEqual(byDest["/rro"]?.options, ["rbind", "ro", "rro"]);
    // The host enforces both: the guest's own flags are only its word.
    const onHost = (m: string) => guestView(path.basename(byDest[m]?.source ?? ""));
    const writable = (p: string) =>
      writeFile(p, "x").then(
        () => true,
        (e: NodeJS.ErrnoException) => (e.code === "EROFS" ? false : Promise.reject(e)),
      );
    assert.equal(await writable(path.join(onHost("/data"), "top")), false);
    assert.equal(await writable(path.join(onHost("/data"), "sub/file")), true, "ro: the submount keeps its rw");
    assert.equal(await writable(path.join(onHost("/rro"), "top")), false);
    assert.equal(await writable(path.join(onHost("/rro"), "sub/file2")), false, "rro: the submount is read-only too");
    assert.equal(await writable(path.join(dir, "vol/sub/file3")), true, "the source's own submount keeps its rw");
  } finally {
    await releaseGuestBundle(share, b);
    execFileSync("umount", [`${dir}/vol/sub`]);
  }
});

test("an unreadable spec names the file", async () => {
  await rm(path.join(dir, "bundle/config.json"));
  await assert.rejects(
    prepareGuestBundle({
      share,
      containerId: "c4",
      hostBundle: path.join(dir, "bundle"),
      rootfs: [],
      nextStorage: next,
    }),
    /container c4: cannot read OCI spec .*bundle\/config.json/,
  );
});

/** A VM stand-in that records what the host hot-plugs and removes. */
function fakeDisks() {
  const plugged: Array<{ id: string; path: string; readOnly: boolean }> = [];
  const removed: string[] = [];
  const host: DiskHost = {
    async hotplugDisk(disk) {
      plugged.push(disk);
      return { id: disk.id, serial: disk.id };
    },
    async removeDevice(id) {
      removed.push(id);
      return "removed";
    },
  };
  return { host, plugged, removed };
}

test("a blockfile rootfs and a raw block device are hot-plugged, never mounted on the host", async () => {
  const image = path.join(dir, "snapshot.img");
  execFileSync("truncate", ["-s", "4M", image]);
  execFileSync("truncate", ["-s", "4M", path.join(dir, "volume.img")]);
  const loop = execFileSync("losetup", ["-f", "--show", path.join(dir, "volume.img")], { encoding: "utf8" }).trim();
  try {
    const [major, minor] = devNumber((await stat(loop, { bigint: true })).rdev)
      .split(":")
      .map(Number);
    const specFile = path.join(dir, "bundle/config.json");
    const spec = JSON.parse(await readFile(specFile, "utf8")) as OciSpec;
    await writeFile(
      specFile,
      JSON.stringify({
        ...spec,
        linux: {
          devices: [{ path: "/dev/xvdb", type: "b", major, minor }],
          resources: { devices: [{ allow: true, type: "b", major, minor, access: "rwm" }] },
        },
      }),
    );
    const before = await readFile("/proc/self/mountinfo", "utf8");
    const disks = fakeDisks();
    const b = await prepareGuestBundle({
      share,
      containerId: "blk1",
      hostBundle: path.join(dir, "bundle"),
      rootfs: [create(MountSchema, { type: "ext4", source: image, options: ["loop", "rw"] })],
      nextStorage: next,
      disks: disks.host,
    });
    try {
      assert.deepEqual(
        disks.plugged.map((d) => [d.path, d.readOnly]),
        [
          [image, false],
          [loop, false],
        ],
      );
      const [root, dev] = b.disks ?? [];
      assert.deepEqual(root?.guest, { kind: "rootfs", serial: root?.serial, fsType: "ext4", options: ["rw"] });
      assert.deepEqual(dev?.guest, { kind: "device", serial: dev?.serial, containerPath: "/dev/xvdb" });
      assert.deepEqual(
        disks.plugged.map((d) => d.id),
        [root?.serial, dev?.serial],
      );
      // Only the binds went into the share; the image is the guest's alone.
      assert.equal(b.storage.length, 2);
      const guest = JSON.parse(await readFile(guestView("blk1/config.json"), "utf8")) as OciSpec;
      assert.equal(guest.root?.path, "rootfs", "the agent sets the root to where it mounts the disk");
      const added = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => !before.includes(l));
      const ofDisk = added.filter((l) => l.includes(image) || / - \S+ \/dev\/loop/.test(l) || l.includes(loop));
      assert.deepEqual(ofDisk, [], "neither disk is mounted on the host");
      assert.equal(execFileSync("losetup", ["-j", image], { encoding: "utf8" }), "", "no loop device over the image");
    } finally {
      await releaseGuestBundle(share, b);
    }
  } finally {
    execFileSync("losetup", ["-d", loop]);
  }
});

test("a block rootfs without a VM to plug it into is refused; a failure after plugging removes the disks", async () => {
  const image = path.join(dir, "snapshot.img");
  execFileSync("truncate", ["-s", "4M", image]);
  const rootfs = [create(MountSchema, { type: "ext4", source: image, options: ["loop", "rw"] })];
  const opts = { share, hostBundle: path.join(dir, "bundle"), rootfs, nextStorage: next };
  await assert.rejects(
    prepareGuestBundle({ ...opts, containerId: "blk2" }),
    (e: Error) => e instanceof UnsupportedSpec && /need a VM to hot-plug them into/.test(e.message),
  );
  await rm(path.join(dir, "vol"), { recursive: true });
  const disks = fakeDisks();
  await assert.rejects(
    prepareGuestBundle({ ...opts, containerId: "blk3", disks: disks.host }),
    /bind mount source .*\/vol \(for \/data\) does not exist/,
  );
  assert.equal(disks.plugged.length, 1);
  assert.deepEqual(disks.removed, [disks.plugged[0]?.id]);
  assert.deepEqual(await readdir(share.mounts), []);
});
