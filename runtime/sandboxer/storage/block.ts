import { randomBytes } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { diskProblem, type GuestDisk } from "../../contract/block.ts";
import type { OciSpec } from "../../contract/oci.ts";
import type { Mount } from "../../protos/gen/containerd/types/mount_pb.ts";
import type { Hypervisor } from "../hypervisor/vm-api.ts";

/** What hot-plugging needs of the sandbox's VM. */
export type DiskHost = Pick<Hypervisor, "hotplugDisk" | "removeDevice">;

/** A disk hot-plugged for a container: what its record keeps, so a restarted daemon can still remove it. */
export interface ContainerDisk {
  /** The device id and serial, made by the host. */
  serial: string;
  /** The host file or block device, as containerd named it. */
  hostPath: string;
  guest: GuestDisk;
}

/** A disk the host hands to the guest without ever mounting it. */
export interface BlockSource {
  hostPath: string;
  readOnly: boolean;
}

/** Where the host's facts about block devices come from (a test points them elsewhere). */
export interface BlockProbe {
  sys: string;
  dev: string;
  mountinfo: string;
  swaps: string;
}

export const HOST_PROBE: BlockProbe = {
  sys: "/sys",
  dev: "/dev",
  mountinfo: "/proc/self/mountinfo",
  swaps: "/proc/swaps",
};

/** A fresh serial: random, so neither a daemon restart nor another container can ever reuse a live one. */
export function newDiskSerial(): string {
  return `kd${randomBytes(9).toString("base64url")}`;
}

/** Options only the host's mount would use (the guest sees a block device, not a file). */
const HOST_ONLY_OPTIONS = new Set(["loop"]);

/**
 * The rootfs as a disk when containerd's snapshot is one: a single mount of a disk file system whose source is a
 * block device (devmapper) or an image file (blockfile, `-o loop`). Overlay, bind and anything else: undefined.
 */
export async function blockRootfs(
  containerId: string,
  mounts: Mount[],
  probe = HOST_PROBE,
): Promise<(BlockSource & { fsType: string; options: string[] }) | undefined> {
  const m = mounts.length === 1 ? mounts[0] : undefined;
  if (!m || m.type === "bind" || m.type === "overlay" || !path.isAbsolute(m.source)) return undefined;
  if (m.options.includes("bind") || m.options.includes("rbind")) return undefined;
  const st = await stat(m.source, { bigint: true }).catch(() => undefined);
  if (!st || !(st.isBlockDevice() || st.isFile())) return undefined;
  const options = m.options.filter((o) => !HOST_ONLY_OPTIONS.has(o));
  const problem = diskProblem({ kind: "rootfs", serial: "x", fsType: m.type, options });
  if (problem) throw new Error(`container ${containerId}: rootfs ${m.source}: ${problem.replace(/^disk x: /, "")}`);
  const inUse = st.isBlockDevice() ? await hostUse(devNumber(st.rdev), probe) : await loopBacking(m.source, probe);
  if (inUse) throw new Error(`container ${containerId}: rootfs ${m.source} ${inUse}; it cannot be handed to the VM`);
  return { hostPath: m.source, readOnly: options.includes("ro"), fsType: m.type, options };
}

interface OciDevice {
  path: string;
  type: string;
  major?: number;
  minor?: number;
}

interface OciDeviceRule {
  allow: boolean;
  type?: string;
  major?: number | null;
  minor?: number | null;
  access?: string;
}

/** linux.devices and linux.resources.devices, the parts of the spec a raw block device takes. */
export function specDevices(spec: OciSpec): { devices: OciDevice[]; rules: OciDeviceRule[] } {
  const linux = spec.linux as { devices?: OciDevice[]; resources?: { devices?: OciDeviceRule[] } } | undefined;
  return { devices: linux?.devices ?? [], rules: linux?.resources?.devices ?? [] };
}

/**
 * The block devices the spec gives the container (CRI `devices`, a block PV) with the host device each one is, by
 * its major:minor. Read-only unless the device cgroup rules let the container write it: the guest's cgroup is only
 * the guest's word, so the host makes the disk read-only itself.
 */
export async function rawBlockDevices(
  containerId: string,
  spec: OciSpec,
  probe = HOST_PROBE,
): Promise<Array<BlockSource & { containerPath: string }>> {
  const { devices, rules } = specDevices(spec);
  const out: Array<BlockSource & { containerPath: string }> = [];
  for (const d of devices.filter((x) => x.type === "b")) {
    const where = `container ${containerId}: block device ${d.path}`;
    if (!Number.isSafeInteger(d.major) || !Number.isSafeInteger(d.minor)) {
      throw new Error(`${where} has no major:minor in linux.devices`);
    }
    const [major, minor] = [d.major as number, d.minor as number];
    const hostPath = await hostDeviceNode(major, minor, probe).catch((e: Error) => {
      throw new Error(`${where}: ${e.message}`);
    });
    const inUse = await hostUse(`${major}:${minor}`, probe);
    if (inUse) {
      throw new Error(
        `${where} is the host's ${hostPath} (${major}:${minor}), which ${inUse}; it is never handed to a VM ` +
          "(for a privileged pod, set privileged_without_host_devices = true for this runtime in containerd)",
      );
    }
    out.push({ hostPath, containerPath: d.path, readOnly: !allows(rules, major, minor, "w") });
  }
  return out;
}

/** Whether the device cgroup rules, in order with the last match winning, grant `access` on block major:minor. */
export function allows(rules: OciDeviceRule[], major: number, minor: number, access: string): boolean {
  let allowed = false;
  for (const r of rules) {
    const type = r.type ?? "a";
    if (type !== "a" && type !== "b") continue;
    if (r.major != null && r.major !== -1 && r.major !== major) continue;
    if (r.minor != null && r.minor !== -1 && r.minor !== minor) continue;
    if (!(r.access ?? "rwm").includes(access)) continue;
    allowed = r.allow;
  }
  return allowed;
}

/** The host's node for a block device number: sysfs names it, and the node must be that very device. */
async function hostDeviceNode(major: number, minor: number, probe: BlockProbe): Promise<string> {
  const uevent = await readFile(path.join(probe.sys, "dev/block", `${major}:${minor}`, "uevent"), "utf8").catch(() => {
    throw new Error(`the host has no block device ${major}:${minor}`);
  });
  const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
  if (!name || name.split("/").includes("..")) throw new Error(`sysfs names no device node for ${major}:${minor}`);
  const node = path.join(probe.dev, name);
  const st = await stat(node, { bigint: true }).catch(() => undefined);
  if (!st?.isBlockDevice() || devNumber(st.rdev) !== `${major}:${minor}`) {
    throw new Error(`${node} is not block device ${major}:${minor} (is devtmpfs mounted on ${probe.dev}?)`);
  }
  return node;
}

/** "major:minor" of a dev_t as stat's rdev holds it (glibc's encoding). */
export function devNumber(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/**
 * Why the host is using block device `dev` ("major:minor") or a partition of it, or undefined: mounted, held by another device
 * (device-mapper, md), or swap. Such a device stays on the host: a guest writing it would corrupt the host.
 */
export async function hostUse(dev: string, probe = HOST_PROBE): Promise<string | undefined> {
  const sysDir = path.join(probe.sys, "dev/block", dev);
  const numbers = [dev];
  // A whole disk: its partitions count as the disk.
  for (const e of await readdir(sysDir).catch(() => [] as string[])) {
    const part = await readFile(path.join(sysDir, e, "dev"), "utf8").catch(() => undefined);
    if (part && (await stat(path.join(sysDir, e, "partition")).catch(() => undefined))) numbers.push(part.trim());
  }
  const mounted = (await readFile(probe.mountinfo, "utf8"))
    .split("\n")
    .map((l) => l.split(" "))
    .find((f) => f[2] !== undefined && numbers.includes(f[2]));
  if (mounted) return `is mounted on the host at ${mounted[4]}`;
  for (const n of numbers) {
    const holders = await readdir(path.join(probe.sys, "dev/block", n, "holders")).catch(() => [] as string[]);
    if (holders.length) return `is held by ${holders.join(", ")} on the host`;
  }
  for (const line of (await readFile(probe.swaps, "utf8").catch(() => "")).split("\n").slice(1)) {
    const file = line.split(/\s+/)[0];
    const st = file ? await stat(file, { bigint: true }).catch(() => undefined) : undefined;
    if (st?.isBlockDevice() && numbers.includes(devNumber(st.rdev))) return `is swap on the host (${file})`;
  }
  return undefined;
}

/** "is attached to /dev/loopN" when a host loop device reads the image file (someone mounted it), else undefined. */
async function loopBacking(file: string, probe: BlockProbe): Promise<string | undefined> {
  const block = path.join(probe.sys, "block");
  for (const name of (await readdir(block).catch(() => [] as string[])).filter((n) => n.startsWith("loop"))) {
    const backing = await readFile(path.join(block, name, "loop/backing_file"), "utf8").catch(() => "");
    if (backing.trim() === file) return `is attached to /dev/${name} on the host`;
  }
  return undefined;
}

/**
 * Hot-plugs each source as a new disk and returns them as the record keeps them; if one fails, those plugged so far
 * are removed again before the error is thrown.
 */
export async function plugDisks(
  host: DiskHost,
  wanted: Array<{ source: BlockSource; guest: (serial: string) => GuestDisk }>,
  timeoutMs?: number,
): Promise<ContainerDisk[]> {
  const plugged: ContainerDisk[] = [];
  try {
    for (const w of wanted) {
      // The host may hand back a disk already in the VM for the same path (PodDisks): its serial is the one to use.
      const { serial } = await host.hotplugDisk({
        id: newDiskSerial(),
        path: w.source.hostPath,
        readOnly: w.source.readOnly,
      });
      plugged.push({ serial, hostPath: w.source.hostPath, guest: w.guest(serial) });
    }
    return plugged;
  } catch (err) {
    await unplugDisks(host, plugged, timeoutMs).catch(() => undefined);
    throw err;
  }
}

/**
 * Removes a container's disks from the VM, newest first, each waited for at most timeoutMs. Every disk is tried;
 * the failures are thrown together, naming each disk, after the rest are done. Returns the ids the guest did not
 * release in time (cut off from their host files, see Hypervisor.removeDevice).
 */
export async function unplugDisks(host: DiskHost, disks: ContainerDisk[], timeoutMs?: number): Promise<string[]> {
  const failures: string[] = [];
  const cutOff: string[] = [];
  for (const d of [...disks].reverse()) {
    const how = await host
      .removeDevice(d.serial, timeoutMs === undefined ? {} : { timeoutMs })
      .catch((e: Error) => failures.push(`disk ${d.serial} (${d.hostPath}): ${e.message}`));
    if (how === "cut-off") cutOff.push(d.serial);
  }
  if (failures.length) throw new Error(failures.join("; "));
  return cutOff;
}
