import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { OciSpec } from "../../../../runtime/contract/oci.ts";
import { MountSchema } from "../../../../runtime/protos/gen/containerd/types/mount_pb.ts";
import {
  allows,
  blockRootfs,
  type DiskHost,
  devNumber,
  hostUse,
  newDiskSerial,
  plugDisks,
  rawBlockDevices,
  unplugDisks,
} from "../../../../runtime/sandboxer/storage/block.ts";

let dir: string;
let image: string;
/** A loop device over a file of the test's: a host block device nobody uses. */
let loop: string;
let loopDev: { major: number; minor: number };

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "block-"));
  image = path.join(dir, "snapshot.img");
  execFileSync("truncate", ["-s", "8M", image]);
  execFileSync("truncate", ["-s", "8M", path.join(dir, "volume.img")]);
  loop = execFileSync("losetup", ["-f", "--show", path.join(dir, "volume.img")], { encoding: "utf8" }).trim();
  const [major, minor] = devNumber((await stat(loop, { bigint: true })).rdev)
    .split(":")
    .map(Number);
  loopDev = { major: major as number, minor: minor as number };
});

after(async () => {
  execFileSync("losetup", ["-d", loop]);
  await rm(dir, { recursive: true, force: true });
});

const mount = (type: string, source: string, options: string[]) => create(MountSchema, { type, source, options });

test("a blockfile or devmapper snapshot is a disk; overlay, bind and stacked mounts are not", async () => {
  assert.deepEqual(await blockRootfs("c1", [mount("ext4", image, ["loop", "rw"])]), {
    hostPath: image,
    readOnly: false,
    fsType: "ext4",
    options: ["rw"],
  });
  assert.equal((await blockRootfs("c1", [mount("ext4", image, ["loop", "ro"])]))?.readOnly, true);
  assert.deepEqual(await blockRootfs("c1", [mount("ext4", loop, [])]), {
    hostPath: loop,
    readOnly: false,
    fsType: "ext4",
    options: [],
  });
  assert.equal(await blockRootfs("c1", [mount("overlay", "overlay", [`lowerdir=${dir}`])]), undefined);
  assert.equal(await blockRootfs("c1", [mount("bind", dir, ["rbind"])]), undefined);
  assert.equal(await blockRootfs("c1", [mount("none", dir, ["rbind"])]), undefined, "a directory is no disk");
  assert.equal(await blockRootfs("c1", []), undefined);
  assert.equal(
    await blockRootfs("c1", [mount("ext4", image, ["loop"]), mount("ext4", image, ["loop"])]),
    undefined,
    "stacked mounts go the host's way (and are refused there)",
  );
});

test("options that would smuggle more into the guest's mount are refused, naming the container", async () => {
  await assert.rejects(
    blockRootfs("c1", [mount("ext4", image, ["loop", "rw,dev"])]),
    /container c1: rootfs .*snapshot\.img: mount option 'rw,dev' is not allowed/,
  );
  await assert.rejects(
    blockRootfs("c1", [mount("ext4 -o dev", image, ["loop"])]),
    /container c1: rootfs .*: file system type 'ext4 -o dev' must match/,
  );
});

test("an image the host has attached to a loop device, or a device it mounted, is never handed to a VM", async () => {
  const attached = execFileSync("losetup", ["-f", "--show", image], { encoding: "utf8" }).trim();
  try {
    await assert.rejects(
      blockRootfs("c1", [mount("ext4", image, ["loop"])]),
      new RegExp(`container c1: rootfs .*snapshot\\.img is attached to ${attached} on the host`),
    );
  } finally {
    execFileSync("losetup", ["-d", attached]);
  }
  const rootDev = devNumber((await stat("/", { bigint: true })).dev);
  assert.match((await hostUse(rootDev)) ?? "", /is mounted on the host at \//);
  assert.equal(await hostUse(`${loopDev.major}:${loopDev.minor}`), undefined);
  execFileSync("mkfs.ext4", ["-q", loop]);
  await mkdir(path.join(dir, "mnt"));
  execFileSync("mount", [loop, path.join(dir, "mnt")]);
  try {
    await assert.rejects(blockRootfs("c1", [mount("ext4", loop, [])]), /is mounted on the host at .*\/mnt/);
  } finally {
    execFileSync("umount", [path.join(dir, "mnt")]);
  }
});

const withDevices = (devices: unknown[], rules: unknown[] = []): OciSpec => ({
  linux: { devices, resources: { devices: rules } },
});

test("raw block devices: found by major:minor, read-only unless the device rules let the container write", async () => {
  const { major, minor } = loopDev;
  const dev = { path: "/dev/xvda", type: "b", major, minor };
  const rwm = { allow: true, type: "b", major, minor, access: "rwm" };
  assert.deepEqual(await rawBlockDevices("c1", withDevices([dev], [{ allow: false, access: "rwm" }, rwm])), [
    { hostPath: loop, containerPath: "/dev/xvda", readOnly: false },
  ]);
  assert.deepEqual(
    await rawBlockDevices(
      "c1",
      withDevices(
        [dev],
        [
          { allow: false, access: "rwm" },
          { ...rwm, access: "r" },
        ],
      ),
    ),
    [{ hostPath: loop, containerPath: "/dev/xvda", readOnly: true }],
  );
  assert.deepEqual(await rawBlockDevices("c1", withDevices([dev])), [
    { hostPath: loop, containerPath: "/dev/xvda", readOnly: true },
  ]);
  assert.deepEqual(
    await rawBlockDevices("c1", withDevices([{ path: "/dev/fuse", type: "c", major: 10, minor: 229 }])),
    [],
    "character devices are not disks",
  );
  await assert.rejects(
    rawBlockDevices("c1", withDevices([{ path: "/dev/nope", type: "b", major: 4095, minor: 1048575 }])),
    /container c1: block device \/dev\/nope: the host has no block device 4095:1048575/,
  );
});

// Attack: a privileged pod's spec lists every host device; the host's own disk must never reach a guest.
test("a block device the host has mounted is refused, with the containerd setting that avoids it", async () => {
  const [major, minor] = devNumber((await stat("/", { bigint: true })).dev)
    .split(":")
    .map(Number);
  await assert.rejects(
    rawBlockDevices(
      "c1",
      withDevices([{ path: "/dev/vda", type: "b", major, minor }], [{ allow: true, access: "rwm" }]),
    ),
    /container c1: block device \/dev\/vda is the host's .* which is mounted on the host at \/.*privileged_without_host_devices/,
  );
});

test("device rules: the last matching rule wins; wildcards and other types", () => {
  assert.equal(allows([], 7, 1, "w"), false);
  assert.equal(allows([{ allow: true, access: "rwm" }], 7, 1, "w"), true);
  assert.equal(allows([{ allow: true, type: "c", access: "rwm" }], 7, 1, "w"), false);
  assert.equal(allows([{ allow: true, type: "b", major: 7, minor: -1, access: "w" }], 7, 1, "w"), true);
  assert.equal(
    allows(
      [
        { allow: true, type: "a", access: "rwm" },
        { allow: false, type: "b", major: 7, minor: 1, access: "w" },
      ],
      7,
      1,
      "w",
    ),
    false,
  );
});

test("serials are fresh, fit virtio-blk's 20 bytes and the contract's characters", () => {
  const seen = new Set(Array.from({ length: 1000 }, newDiskSerial));
  assert.equal(seen.size, 1000);
  for (const s of seen) assert.match(s, /^[A-Za-z0-9_-]{1,20}$/);
});

function fakeHost(opts: { failPlugAt?: number; removal?: (id: string) => Promise<"removed" | "cut-off"> } = {}) {
  const plugged: string[] = [];
  const removed: string[] = [];
  const host: DiskHost = {
    async hotplugDisk(disk) {
      if (plugged.length === opts.failPlugAt) throw new Error(`device_add ${disk.id} failed`);
      plugged.push(disk.id);
      return { id: disk.id, serial: disk.id };
    },
    async removeDevice(id) {
      removed.push(id);
      return opts.removal ? opts.removal(id) : "removed";
    },
  };
  return { host, plugged, removed };
}

const wanted = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    source: { hostPath: `/dev/fake${i}`, readOnly: false },
    guest: (serial: string) => ({ kind: "device" as const, serial, containerPath: `/dev/x${i}` }),
  }));

test("a failed hot-plug takes back the disks plugged before it", async () => {
  const f = fakeHost({ failPlugAt: 2 });
  await assert.rejects(plugDisks(f.host, wanted(3)), /device_add .* failed/);
  assert.deepEqual(f.removed, [...f.plugged].reverse());
  const ok = fakeHost();
  const disks = await plugDisks(ok.host, wanted(2));
  assert.deepEqual(
    disks.map((d) => [d.hostPath, d.guest]),
    [
      ["/dev/fake0", { kind: "device", serial: disks[0]?.serial, containerPath: "/dev/x0" }],
      ["/dev/fake1", { kind: "device", serial: disks[1]?.serial, containerPath: "/dev/x1" }],
    ],
  );
});

test("unplugging tries every disk, reports the ones cut off, and names each failure", async () => {
  const f = fakeHost({
    removal: async (id) => {
      if (id === "a") throw new Error("QMP connection closed");
      return id === "b" ? "cut-off" : "removed";
    },
  });
  const disks = ["a", "b", "c"].map((serial) => ({
    serial,
    hostPath: `/x/${serial}`,
    guest: { kind: "device" as const, serial, containerPath: `/dev/${serial}` },
  }));
  await assert.rejects(unplugDisks(f.host, disks, 10), /disk a \(\/x\/a\): QMP connection closed/);
  assert.deepEqual(f.removed, ["c", "b", "a"]);
  assert.deepEqual(await unplugDisks(fakeHost({ removal: async () => "cut-off" }).host, disks.slice(1)), ["c", "b"]);
});
