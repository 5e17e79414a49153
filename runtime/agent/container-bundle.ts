import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { GuestDisk } from "../contract/block.ts";
import type { OciSpec } from "../contract/oci.ts";
import {
  type DiskLookup,
  type FoundDisk,
  findDisk,
  GUEST_LOOKUP,
  mountRootfsDisk,
  retargetDevices,
  unmountRootfsDisk,
} from "./block-devices.ts";
import { TaskError } from "./errors.ts";
import { mountPoints } from "./mounts.ts";

export interface ContainerDirOptions {
  /** The agent's state directory; the container's directory is <stateDir>/<id>. */
  stateDir: string;
  /** A container id validated as a file name (ContainerRegistry.reserve). */
  id: string;
  /** The host's bundle, in the share. */
  bundle: string;
  /** Whether the create asked for a terminal; the spec's process.terminal must agree. */
  terminal: boolean;
  /** Writes the runc bundle in target from the host's bundle. */
  prepareBundle: (source: string, target: string) => Promise<OciSpec>;
  /** Disks the host hot-plugged for the container: its rootfs, raw block devices. */
  disks?: GuestDisk[];
  /** Where disks are looked up; default the guest's sysfs and /dev. */
  diskLookup?: DiskLookup;
}

/** A rootfs disk is mounted here, in the container's directory; removeContainerDir unmounts it before removing. */
const DISK_ROOTFS = "rootfs";

/**
 * Makes the container's directory afresh and writes the bundle runc runs from into it: the host's bundle, in the
 * share, is read-only here and never rewritten. Returns the directory; on failure nothing of it is left.
 */
export async function prepareContainerDir(opts: ContainerDirOptions): Promise<string> {
  const { id, bundle, terminal } = opts;
  const dir = path.join(opts.stateDir, id);
  await removeContainerDir(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const spec = await opts
    .prepareBundle(bundle, dir)
    .then((s) => (opts.disks?.length ? useDisks(dir, s, opts.disks, opts.diskLookup ?? GUEST_LOOKUP) : s))
    .catch(async (e: unknown) => {
      await removeContainerDir(dir);
      throw e;
    });
  if (Boolean(spec.process?.terminal) !== terminal) {
    await removeContainerDir(dir);
    throw new TaskError(
      "InvalidArgument",
      `container ${id}: terminal=${terminal} was requested but ${bundle}/config.json has process.terminal=${Boolean(spec.process?.terminal)}; they must match`,
    );
  }
  return dir;
}

/**
 * Finds the container's disks by serial (waiting for them to appear), mounts its rootfs disk and points the spec's
 * root and raw block devices at them; rewrites <dir>/config.json.
 */
async function useDisks(dir: string, spec: OciSpec, disks: GuestDisk[], lookup: DiskLookup): Promise<OciSpec> {
  const found = new Map<string, FoundDisk>();
  for (const d of disks) found.set(d.serial, await findDisk(d.serial, lookup));
  const at = (serial: string) => found.get(serial) as FoundDisk;
  let out = retargetDevices(
    spec,
    disks.flatMap((d) => (d.kind === "device" ? [{ containerPath: d.containerPath, ...at(d.serial) }] : [])),
  );
  const root = disks.find((d) => d.kind === "rootfs");
  if (root) {
    const target = path.join(dir, DISK_ROOTFS);
    await mountRootfsDisk(root, at(root.serial), target);
    out = { ...out, root: { ...out.root, path: target } };
  }
  await writeFile(path.join(dir, "config.json"), JSON.stringify(out), { mode: 0o600 });
  return out;
}

/** Removes the container's directory; a rootfs disk mounted in it is unmounted first, and never emptied. */
export async function removeContainerDir(dir: string): Promise<void> {
  const rootfs = path.join(dir, DISK_ROOTFS);
  if (mountPoints().has(rootfs)) await unmountRootfsDisk(rootfs);
  await rm(dir, { recursive: true, force: true });
}
