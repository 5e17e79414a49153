import { mkdir, readdir, readFile, rmdir, stat } from "node:fs/promises";
import path from "node:path";
import type { GuestDisk } from "../contract/block.ts";
import type { OciSpec } from "../contract/oci.ts";
import { TaskError } from "./errors.ts";
import { mountPoints } from "./mounts.ts";
import { failure, runProcess } from "./run-process.ts";

/** How long a hot-plugged disk may take to appear (the host plugged it before the create). */
export const DISK_APPEAR_MS = 15_000;
const POLL_MS = 50;

/** A disk the guest kernel knows, by the serial the host gave it. */
export interface FoundDisk {
  serial: string;
  /** Its node, e.g. /dev/vdb. */
  node: string;
  major: number;
  minor: number;
}

/** Where disks are looked up (a test points these at a fake sysfs and /dev). */
export interface DiskLookup {
  sysBlock: string;
  dev: string;
  timeoutMs: number;
}

export const GUEST_LOOKUP: DiskLookup = { sysBlock: "/sys/block", dev: "/dev", timeoutMs: DISK_APPEAR_MS };

/**
 * The serial of a block device in sysfs: virtio-blk's `serial` attribute, or a SCSI disk's unit serial number
 * page (VPD 0x80: four header bytes, then the serial). Trailing NULs and blanks are padding.
 */
async function serialOf(dir: string): Promise<string | undefined> {
  const virtio = await readFile(path.join(dir, "serial"), "latin1").catch(() => undefined);
  if (virtio !== undefined) return virtio.replace(/[\0\s]+$/, "");
  const vpd = await readFile(path.join(dir, "device/vpd_pg80")).catch(() => undefined);
  if (vpd && vpd.length > 4)
    return vpd
      .subarray(4)
      .toString("latin1")
      .replace(/[\0\s]+$/, "");
  return undefined;
}

/**
 * Waits for the disk with this serial to appear, at most lookup.timeoutMs: found by its serial in sysfs, never by
 * the order disks arrive in; its node in /dev must be that very device.
 */
export async function findDisk(serial: string, lookup: DiskLookup = GUEST_LOOKUP): Promise<FoundDisk> {
  const deadline = Date.now() + lookup.timeoutMs;
  for (;;) {
    for (const name of await readdir(lookup.sysBlock).catch(() => [] as string[])) {
      const dir = path.join(lookup.sysBlock, name);
      if ((await serialOf(dir)) !== serial) continue;
      const numbers = /^(\d+):(\d+)$/.exec((await readFile(path.join(dir, "dev"), "utf8")).trim());
      if (!numbers) throw new TaskError("Internal", `disk ${serial}: ${dir}/dev holds no major:minor`);
      const [major, minor] = [Number(numbers[1]), Number(numbers[2])];
      const node = path.join(lookup.dev, name);
      const st = await stat(node, { bigint: true }).catch(() => undefined);
      if (!st?.isBlockDevice() || devNumber(st.rdev) !== `${major}:${minor}`) {
        throw new TaskError("Internal", `disk ${serial}: ${node} is not block device ${major}:${minor}`);
      }
      return { serial, node, major, minor };
    }
    if (Date.now() >= deadline) {
      throw new TaskError(
        "FailedPrecondition",
        `disk ${serial} did not appear in ${lookup.sysBlock} within ${lookup.timeoutMs} ms (is it hot-plugged, and ` +
          "does the guest kernel have CONFIG_HOTPLUG_PCI_ACPI or CONFIG_HOTPLUG_PCI_PCIE?)",
      );
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** "major:minor" of a dev_t as stat's rdev holds it. */
function devNumber(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

interface OciDevice {
  path: string;
  type: string;
  major?: number;
  minor?: number;
  [key: string]: unknown;
}

interface OciDeviceRule {
  allow: boolean;
  type?: string;
  major?: number | null;
  minor?: number | null;
  [key: string]: unknown;
}

/**
 * Points each raw block device of the spec at the guest disk the host plugged for it: the entry at its container
 * path gets the disk's major:minor (runc makes the node from it), and device cgroup rules for the host's number
 * follow it. A disk whose path the spec does not list is refused.
 */
export function retargetDevices(
  spec: OciSpec,
  disks: Array<{ containerPath: string; major: number; minor: number }>,
): OciSpec {
  if (!disks.length) return spec;
  const out = structuredClone(spec);
  const linux = (out.linux ?? {}) as { devices?: OciDevice[]; resources?: { devices?: OciDeviceRule[] } };
  const rules = linux.resources?.devices ?? [];
  const retargeted = new Set<OciDeviceRule>();
  for (const d of disks) {
    const entry = linux.devices?.find((x) => x.path === d.containerPath && x.type === "b");
    if (!entry) {
      throw new TaskError("InvalidArgument", `block device ${d.containerPath} is not in the spec's linux.devices`);
    }
    for (const r of rules) {
      if (retargeted.has(r) || r.type !== "b" || r.major !== entry.major || r.minor !== entry.minor) continue;
      Object.assign(r, { major: d.major, minor: d.minor });
      retargeted.add(r);
    }
    Object.assign(entry, { major: d.major, minor: d.minor });
  }
  return out;
}

/**
 * Mounts the rootfs disk on target (created here) with the snapshot's file system type and options, which the host
 * took from containerd without mounting anything itself.
 */
export async function mountRootfsDisk(
  disk: Extract<GuestDisk, { kind: "rootfs" }>,
  found: FoundDisk,
  target: string,
): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o755 });
  const args = ["-t", disk.fsType, ...(disk.options.length ? ["-o", disk.options.join(",")] : []), found.node, target];
  const r = await runProcess("mount", args, { timeoutMs: 60_000 });
  if (r.failed) {
    await rmdir(target).catch(() => undefined);
    throw new TaskError(
      "FailedPrecondition",
      `disk ${disk.serial}: mount ${args.join(" ")} failed: ${failure(r)} (does the guest kernel have ${disk.fsType}?)`,
    );
  }
}

/**
 * Unmounts a rootfs disk's mount point and removes the (then empty) directory. A busy mount is detached lazily so
 * the device is released for unplugging. Never removes anything below a mount point.
 */
export async function unmountRootfsDisk(target: string): Promise<void> {
  if (mountPoints().has(target)) {
    const r = await runProcess("umount", [target]);
    if (r.failed) await runProcess("umount", ["-l", target]);
    if (mountPoints().has(target)) throw new TaskError("Internal", `${target} is still mounted: ${failure(r)}`);
  }
  await rmdir(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "ENOENT") throw e;
  });
}
