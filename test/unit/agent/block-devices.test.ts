import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import {
  type DiskLookup,
  findDisk,
  mountRootfsDisk,
  retargetDevices,
  unmountRootfsDisk,
} from "../../../runtime/agent/block-devices.ts";
import { prepareContainerDir, removeContainerDir } from "../../../runtime/agent/container-bundle.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { mountPoints } from "../../../runtime/agent/mounts.ts";
import { type GuestDisk, parseDiskMounts } from "../../../runtime/contract/block.ts";
import type { OciSpec } from "../../../runtime/contract/oci.ts";

let dir: string;
let lookup: DiskLookup;
/** A real disk stand-in: a loop device over an ext4 image, shown in the fake sysfs as "vdb" with a serial. */
let loop: string;
let loopNumbers: { major: number; minor: number };

/** Adds a disk to the fake sysfs (and its node to the fake /dev, unless node is false). */
async function addDisk(name: string, serial: string | undefined, numbers: string, node = true, vpd?: Buffer) {
  const d = path.join(lookup.sysBlock, name);
  await mkdir(path.join(d, "device"), { recursive: true });
  if (serial !== undefined) await writeFile(path.join(d, "serial"), serial);
  if (vpd) await writeFile(path.join(d, "device/vpd_pg80"), vpd);
  await writeFile(path.join(d, "dev"), `${numbers}\n`);
  const [major, minor] = numbers.split(":");
  if (node) execFileSync("mknod", [path.join(lookup.dev, name), "b", major as string, minor as string]);
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "agent-disks-"));
  lookup = { sysBlock: path.join(dir, "sys/block"), dev: path.join(dir, "dev"), timeoutMs: 500 };
  await mkdir(lookup.sysBlock, { recursive: true });
  await mkdir(lookup.dev);
  const image = path.join(dir, "rootfs.img");
  execFileSync("truncate", ["-s", "16M", image]);
  execFileSync("mkfs.ext4", ["-q", image]);
  loop = execFileSync("losetup", ["-f", "--show", image], { encoding: "utf8" }).trim();
  const st = await stat(loop);
  loopNumbers = { major: Math.floor(st.rdev / 256), minor: st.rdev % 256 };
  await addDisk("vda", "some-other-disk", "253:0");
  await addDisk("vdb", "kdRootfs\n", `${loopNumbers.major}:${loopNumbers.minor}`);
  // Only a node in the fake /dev: runc never sees these numbers on the host.
  await addDisk("sda", undefined, "8:0", true, Buffer.concat([Buffer.from([0, 0x80, 0, 8]), Buffer.from("kdScsi  ")]));
});

after(async () => {
  for (const m of [...mountPoints().keys()].filter((p) => p.startsWith(dir))) execFileSync("umount", ["-l", m]);
  execFileSync("losetup", ["-d", loop]);
  await rm(dir, { recursive: true, force: true });
});

test("a disk is found by its serial (virtio-blk or SCSI), never by its place", async () => {
  assert.deepEqual(await findDisk("kdRootfs", lookup), {
    serial: "kdRootfs",
    node: path.join(lookup.dev, "vdb"),
    ...loopNumbers,
  });
  assert.deepEqual(await findDisk("kdScsi", lookup), {
    serial: "kdScsi",
    node: path.join(lookup.dev, "sda"),
    major: 8,
    minor: 0,
  });
});

test("a disk that appears late is waited for; one that never does fails after the bound", async () => {
  setTimeout(() => void addDisk("vdc", "kdLate", "253:32"), 150);
  assert.equal((await findDisk("kdLate", lookup)).node, path.join(lookup.dev, "vdc"));
  const t = Date.now();
  await assert.rejects(
    findDisk("kdNever", lookup),
    (e: Error) =>
      e instanceof TaskError &&
      e.code === "FailedPrecondition" &&
      /disk kdNever did not appear .* within 500 ms/.test(e.message),
  );
  assert.ok(Date.now() - t >= 500);
});

test("a node in /dev that is not the disk sysfs names is refused", async () => {
  await addDisk("vdd", "kdWrongNode", "253:48", false);
  execFileSync("mknod", [path.join(lookup.dev, "vdd"), "b", "253", "49"]);
  await assert.rejects(findDisk("kdWrongNode", lookup), /disk kdWrongNode: .*\/vdd is not block device 253:48/);
});

test("raw block devices get the guest disk's number, and so do the device rules for the host's number", () => {
  const spec: OciSpec = {
    linux: {
      devices: [
        { path: "/dev/xvdb", type: "b", major: 7, minor: 3, fileMode: 0o660 },
        { path: "/dev/fuse", type: "c", major: 10, minor: 229 },
      ],
      resources: {
        devices: [
          { allow: false, access: "rwm" },
          { allow: true, type: "b", major: 7, minor: 3, access: "rwm" },
          { allow: true, type: "c", major: 7, minor: 3, access: "r" },
        ],
      },
    },
  };
  const out = retargetDevices(spec, [{ containerPath: "/dev/xvdb", major: 253, minor: 16 }]);
  assert.deepEqual(out.linux?.devices, [
    { path: "/dev/xvdb", type: "b", major: 253, minor: 16, fileMode: 0o660 },
    { path: "/dev/fuse", type: "c", major: 10, minor: 229 },
  ]);
  assert.deepEqual((out.linux?.resources as { devices?: unknown[] } | undefined)?.devices, [
    { allow: false, access: "rwm" },
    { allow: true, type: "b", major: 253, minor: 16, access: "rwm" },
    { allow: true, type: "c", major: 7, minor: 3, access: "r" },
  ]);
  assert.equal(
    (spec.linux?.devices as Array<{ major: number }> | undefined)?.[0]?.major,
    7,
    "the input is not changed",
  );
  assert.throws(
    () => retargetDevices(spec, [{ containerPath: "/dev/other", major: 253, minor: 16 }]),
    /block device \/dev\/other is not in the spec's linux.devices/,
  );
});

test("the create's disk entries are checked before anything is looked up", () => {
  const entry = (type: string, source: string, target: string, options: string[]) => ({
    type,
    source,
    target,
    options,
  });
  assert.deepEqual(
    parseDiskMounts([
      entry("kuasar.virtio-blk.rootfs", "kd1", "", ["fstype=ext4", "rw"]),
      entry("kuasar.virtio-blk.device", "kd2", "/dev/xvdb", []),
    ]),
    [
      { kind: "rootfs", serial: "kd1", fsType: "ext4", options: ["rw"] },
      { kind: "device", serial: "kd2", containerPath: "/dev/xvdb" },
    ],
  );
  assert.throws(() => parseDiskMounts([entry("overlay", "overlay", "", [])]), /rootfs entry 0 has type 'overlay'/);
  assert.throws(() => parseDiskMounts([entry("kuasar.virtio-blk.rootfs", "kd1", "", ["rw"])]), /fstype=<type>/);
  assert.throws(
    () => parseDiskMounts([entry("kuasar.virtio-blk.rootfs", "../../x", "", ["fstype=ext4"])]),
    /disk serial '..\/..\/x' must be 1-20 characters/,
  );
  assert.throws(
    () => parseDiskMounts([entry("kuasar.virtio-blk.device", "kd2", "/dev/../etc/passwd", [])]),
    /container path '\/dev\/..\/etc\/passwd' must be an absolute, normalized path/,
  );
  assert.throws(
    () =>
      parseDiskMounts([
        entry("kuasar.virtio-blk.device", "kd2", "/dev/a", []),
        entry("kuasar.virtio-blk.device", "kd2", "/dev/b", []),
      ]),
    /a disk serial appears twice/,
  );
});

const rootfsDisk: GuestDisk = { kind: "rootfs", serial: "kdRootfs", fsType: "ext4", options: ["rw"] };

test("the rootfs disk is mounted in the container's directory and the spec's root points there", async () => {
  const stateDir = path.join(dir, "state");
  const prepareBundle = async (_source: string, target: string): Promise<OciSpec> => {
    const spec = { root: { path: "/run/kuasar/state/c1/rootfs" }, process: { terminal: false } };
    await writeFile(path.join(target, "config.json"), JSON.stringify(spec));
    return spec;
  };
  const cdir = await prepareContainerDir({
    stateDir,
    id: "c1",
    bundle: "/run/kuasar/state/c1",
    terminal: false,
    prepareBundle,
    disks: [rootfsDisk],
    diskLookup: lookup,
  });
  const target = path.join(cdir, "rootfs");
  assert.equal(mountPoints().get(target), "ext4");
  const written = JSON.parse(await readFile(path.join(cdir, "config.json"), "utf8")) as OciSpec;
  assert.equal(written.root?.path, target);
  await writeFile(path.join(target, "kept"), "written by the container\n");

  // A stale directory (the agent restarted) with the disk still mounted: unmounted, never emptied.
  const again = await prepareContainerDir({
    stateDir,
    id: "c1",
    bundle: "/run/kuasar/state/c1",
    terminal: false,
    prepareBundle,
    disks: [rootfsDisk],
    diskLookup: lookup,
  });
  assert.equal(await readFile(path.join(again, "rootfs/kept"), "utf8"), "written by the container\n");
  await removeContainerDir(again);
  assert.equal(existsSync(again), false);
  assert.equal(mountPoints().has(target), false, "the disk is unmounted before the host unplugs it");
  await mountRootfsDisk(rootfsDisk, await findDisk("kdRootfs", lookup), path.join(dir, "check"));
  assert.equal(await readFile(path.join(dir, "check/kept"), "utf8"), "written by the container\n");
  await unmountRootfsDisk(path.join(dir, "check"));
  assert.equal(existsSync(path.join(dir, "check")), false);
});

test("a rootfs the guest cannot mount fails the create naming the disk, and leaves nothing", async () => {
  const stateDir = path.join(dir, "state2");
  await assert.rejects(
    prepareContainerDir({
      stateDir,
      id: "c2",
      bundle: "/b",
      terminal: false,
      prepareBundle: async () => ({ root: { path: "rootfs" } }),
      disks: [{ ...rootfsDisk, fsType: "xfs" }],
      diskLookup: lookup,
    }),
    /disk kdRootfs: mount -t xfs .* failed/,
  );
  assert.equal(existsSync(path.join(stateDir, "c2")), false);
});
