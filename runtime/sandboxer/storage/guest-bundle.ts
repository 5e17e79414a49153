import { mkdir, open, readFile, stat } from "node:fs/promises";
import path from "node:path";
import type { GuestDisk } from "../../contract/block.ts";
import type { OciMount, OciSpec } from "../../contract/oci.ts";
import { POD_FILES } from "../../contract/share.ts";
import type { Mount } from "../../protos/gen/containerd/types/mount_pb.ts";
import { blockRootfs, type ContainerDisk, type DiskHost, plugDisks, rawBlockDevices, unplugDisks } from "./block.ts";
import { podTmpfsFor } from "./memory-volumes.ts";
import { bindMount, mount, readonlyTree } from "./mount.ts";
import { removeTree } from "./remove.ts";
import { publish, type ShareLayout, unpublish } from "./share.ts";

/** A spec the VM cannot honour: containerd gets InvalidArgument, and nothing was mounted or written. */
export class UnsupportedSpec extends Error {}

export interface GuestBundle {
  containerId: string;
  /** Bundle directory inside the guest, holding config.json (read-only there: the agent copies it). */
  guestBundle: string;
  /** Names of the container's mounts in the share (storage<N>), in the order they were made. */
  storage: string[];
  /** Disks hot-plugged into the VM for it (a block rootfs, raw block devices); absent in older records. */
  disks?: ContainerDisk[];
}

/** How many taken storage<N> names are skipped before giving up (a stale counter after a crash). */
const MAX_STORAGE_PROBES = 1000;

function isBind(m: OciMount): boolean {
  return m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
}

/**
 * Makes a host bundle runnable in the guest: mounts the container rootfs (containerd hands over snapshot mounts
 * and does not mount them) and every host bind source into the share as storage<N>, rewrites the spec to the guest
 * paths, and writes it to mounts/<id>/config.json. Everything is made in the host's working tree, which the guest
 * cannot write (see ShareLayout). On failure everything mounted so far is undone.
 */
export async function prepareGuestBundle(opts: {
  share: ShareLayout;
  containerId: string;
  hostBundle: string;
  rootfs: Mount[];
  nextStorage: () => number;
  /** The sandbox's VM, for a block rootfs and raw block devices: without it, such a spec is refused. */
  disks?: DiskHost;
  /** How long a disk removal after a failure waits for the guest (Hypervisor.removeDevice). */
  diskTimeoutMs?: number;
}): Promise<GuestBundle> {
  const { share, containerId } = opts;
  const specPath = path.join(opts.hostBundle, "config.json");
  let spec: OciSpec;
  try {
    spec = JSON.parse(await readFile(specPath, "utf8")) as OciSpec;
  } catch (err) {
    throw new Error(`container ${containerId}: cannot read OCI spec ${specPath}: ${(err as Error).message}`);
  }
  const refused = propagationRefusal(spec.mounts);
  if (refused) throw new UnsupportedSpec(`container ${containerId}: ${refused}`);
  const unusable = (e: Error) => {
    throw new UnsupportedSpec(e.message);
  };
  // Never mounted on the host: a file system the guest writes is parsed only by the guest's kernel.
  const blockRoot = await blockRootfs(containerId, opts.rootfs).catch(unusable);
  const devices = await rawBlockDevices(containerId, spec).catch(unusable);
  if ((blockRoot || devices.length) && !opts.disks) {
    throw new UnsupportedSpec(`container ${containerId}: its block rootfs or devices need a VM to hot-plug them into`);
  }
  const bundle: GuestBundle = {
    containerId,
    guestBundle: path.posix.join(share.guest, containerId),
    storage: [],
    disks: [],
  };
  // A mount point in staging/ and its twin in mounts/, both new: a name that exists (a counter reset by a crash)
  // is skipped, never reused.
  const storage = async (kind: "dir" | "file") => {
    for (let i = 0; i < MAX_STORAGE_PROBES; i++) {
      const name = `storage${opts.nextStorage()}`;
      if (!(await createNew(path.join(share.mounts, name), kind))) continue;
      bundle.storage.push(name);
      if (!(await createNew(path.join(share.staging, name), kind))) {
        throw new Error(`container ${containerId}: ${path.join(share.staging, name)} exists already`);
      }
      return { staged: path.join(share.staging, name), name, guest: path.posix.join(share.guest, name) };
    }
    throw new Error(`container ${containerId}: no free storage name in ${share.mounts}`);
  };
  try {
    if (opts.disks && (blockRoot || devices.length)) {
      bundle.disks = await plugDisks(opts.disks, [
        ...(blockRoot
          ? [
              {
                source: blockRoot,
                guest: (serial: string): GuestDisk => ({ kind: "rootfs", serial, ...fsOf(blockRoot) }),
              },
            ]
          : []),
        ...devices.map((d) => ({
          source: d,
          guest: (serial: string): GuestDisk => ({ kind: "device", serial, containerPath: d.containerPath }),
        })),
      ]);
    }
    // A block rootfs is mounted by the agent, from the disk; the spec's root is the agent's to set.
    if (!blockRoot) {
      const root = await storage("dir");
      await mountRootfs(opts, spec, root.staged);
      await publish(share, root.name);
      spec.root = { ...spec.root, path: root.guest };
    }

    const mounts: OciMount[] = [];
    for (const m of spec.mounts ?? []) {
      const podTmpfs = await podTmpfsFor(m);
      if (podTmpfs) mounts.push(podTmpfs);
      else if (isBind(m) && m.source && path.isAbsolute(m.source)) {
        const st = await stat(m.source).catch(() => undefined);
        if (!st)
          throw new Error(
            `container ${containerId}: bind mount source ${m.source} (for ${m.destination}) does not exist`,
          );
        const s = await storage(st.isDirectory() ? "dir" : "file");
        const options = m.options ?? [];
        // The host enforces read-only: the guest's own flags are only a guest's word.
        await bindMount(m.source, s.staged, options.includes("ro") || options.includes("rro"));
        if (options.includes("rro")) readonlyTree(s.staged);
        await publish(share, s.name);
        mounts.push({ ...m, source: s.guest, options: guestBindOptions(options) });
      } else mounts.push(m);
    }
    spec.mounts = [...mounts, ...podFileMounts(share.podFiles, mounts, spec.root?.readonly ?? false)];

    const dir = path.join(share.mounts, containerId);
    // A directory left by a crash (the id is free again, containerd said so) is replaced, not reused.
    await removeTree(dir);
    await mkdir(dir, { mode: 0o755 });
    const fh = await open(path.join(dir, "config.json"), "wx", 0o644);
    try {
      await fh.writeFile(JSON.stringify(spec));
    } finally {
      await fh.close();
    }
    return bundle;
  } catch (err) {
    if (opts.disks && bundle.disks?.length) {
      await unplugDisks(opts.disks, bundle.disks, opts.diskTimeoutMs).catch(() => undefined);
    }
    await releaseGuestBundle(share, bundle).catch(() => undefined);
    throw err;
  }
}

const fsOf = (b: { fsType: string; options: string[] }) => ({ fsType: b.fsType, options: b.options });

/**
 * The pod's /etc/hostname, /etc/hosts and /etc/resolv.conf for a container whose spec does not bring its own (kubelet
 * mounts its own /etc/hosts), as containerd's CRI adds them for a runc pod: binds of the pod-wide files, read-only
 * when the container's rootfs is. Here they are the guest's own copies of the share's files.
 */
function podFileMounts(podFiles: string, mounts: OciMount[], readonly: boolean): OciMount[] {
  const taken = new Set(mounts.map((m) => path.posix.normalize(m.destination)));
  return POD_FILES.filter((name) => !taken.has(`/etc/${name}`)).map((name) => ({
    destination: `/etc/${name}`,
    type: "bind",
    source: path.posix.join(podFiles, name),
    options: ["rbind", "rprivate", readonly ? "ro" : "rw"],
  }));
}

/**
 * Why a mount cannot be honoured in a VM, or undefined: bidirectional propagation (rshared) would need mounts made in
 * the guest to reach the host, and they never do. Host-to-container propagation (rslave) works: the share's binds
 * are slaves of their sources, and the guest reads through the share to what the host mounts there later.
 */
function propagationRefusal(mounts: OciMount[] | undefined): string | undefined {
  const m = mounts?.find((x) => (x.options ?? []).some((o) => o === "rshared" || o === "shared"));
  if (!m) return undefined;
  return (
    `mount ${m.destination}: Bidirectional propagation cannot be honoured in a VM sandbox (mounts made in the guest ` +
    "never reach the host); use HostToContainer or None"
  );
}

/**
 * A read-only bind is read-only on the host at its top only, so its submounts keep their own flags (CRI's
 * non-recursive semantics); in the guest the whole share is one file system, where "ro" would cover the submounts
 * too, so there the bind is made rw and the host's mount enforces. Recursive read-only ("rro") stays as it is.
 */
function guestBindOptions(options: string[]): string[] {
  if (!options.includes("ro") || options.includes("rro")) return options;
  return options.map((o) => (o === "ro" ? "rw" : o));
}

/** Creates path as a new empty directory or file; false when something is there already. */
async function createNew(p: string, kind: "dir" | "file"): Promise<boolean> {
  try {
    if (kind === "dir") await mkdir(p, { mode: 0o755 });
    else await (await open(p, "wx", 0o644)).close();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

async function mountRootfs(
  opts: { containerId: string; hostBundle: string; rootfs: Mount[] },
  spec: OciSpec,
  target: string,
): Promise<void> {
  if (opts.rootfs.length > 1) {
    throw new Error(`container ${opts.containerId}: a rootfs of ${opts.rootfs.length} stacked mounts is not supported`);
  }
  const m = opts.rootfs[0];
  if (m && m.type !== "bind" && !m.options.includes("bind") && !m.options.includes("rbind")) {
    await mount(m.type, m.source, target, m.options);
    return;
  }
  // A bind snapshot (native snapshotter) or no mounts at all: the rootfs is a host directory.
  const source = m?.source ?? path.resolve(opts.hostBundle, spec.root?.path ?? "rootfs");
  if (!(await stat(source).catch(() => undefined))?.isDirectory()) {
    throw new Error(`container ${opts.containerId}: rootfs ${source} is not a directory`);
  }
  await bindMount(source, target, m?.options.includes("ro") ?? false);
}

/**
 * Takes the container's mounts down (both views, newest first) and removes its storage and bundle entries. Removal
 * never crosses a mount point, so a mount that would not go keeps its volume's data out of reach.
 */
export async function releaseGuestBundle(
  share: ShareLayout,
  b: Pick<GuestBundle, "containerId" | "storage">,
): Promise<void> {
  const failures: string[] = [];
  const attempt = (p: Promise<unknown>) => p.catch((e: Error) => failures.push(e.message));
  for (const name of [...b.storage].reverse()) {
    await attempt(
      unpublish(share, name).then(async () => {
        await removeTree(path.join(share.staging, name));
        await removeTree(path.join(share.mounts, name));
      }),
    );
  }
  await attempt(removeTree(path.join(share.mounts, b.containerId)));
  if (failures.length) throw new Error(`container ${b.containerId}: ${failures.join("; ")}`);
}
