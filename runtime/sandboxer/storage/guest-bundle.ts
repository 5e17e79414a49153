import { mkdir, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Mount } from "../../protos/gen/containerd/types/mount_pb.ts";
import { bindMount, mount, unmount } from "./mount.ts";

/** The parts of an OCI runtime spec the host rewrites; everything else passes through untouched. */
export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}
export interface OciSpec {
  root?: { path: string; readonly?: boolean };
  mounts?: OciMount[];
  [key: string]: unknown;
}

/** The sandbox's shared directory as the host and the guest see it. */
export interface Share {
  host: string;
  guest: string;
}

export interface GuestBundle {
  containerId: string;
  /** Bundle directory inside the guest, holding config.json. */
  guestBundle: string;
  /** Host mount points under the share, in the order they were mounted. */
  mounts: string[];
  /** Host paths to remove after unmounting (storage dirs and the bundle dir). */
  paths: string[];
}

/** containerd's /dev/shm is a host tmpfs of its pod sandbox; inside a VM the guest gets its own. */
const GUEST_SHM: OciMount = {
  destination: "/dev/shm",
  type: "tmpfs",
  source: "shm",
  options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
};

function isBind(m: OciMount): boolean {
  return m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
}

/**
 * Makes a host bundle runnable in the guest: mounts the container rootfs (containerd hands over snapshot mounts
 * and does not mount them) and every host bind source under <share>/storage<N>, rewrites the spec to the guest
 * paths, and writes it to <share>/<id>/config.json. On failure everything mounted so far is undone.
 */
export async function prepareGuestBundle(opts: {
  share: Share;
  containerId: string;
  hostBundle: string;
  rootfs: Mount[];
  nextStorage: () => number;
}): Promise<GuestBundle> {
  const { share, containerId } = opts;
  const specPath = path.join(opts.hostBundle, "config.json");
  let spec: OciSpec;
  try {
    spec = JSON.parse(await readFile(specPath, "utf8")) as OciSpec;
  } catch (err) {
    throw new Error(`container ${containerId}: cannot read OCI spec ${specPath}: ${(err as Error).message}`);
  }
  const bundle: GuestBundle = {
    containerId,
    guestBundle: path.posix.join(share.guest, containerId),
    mounts: [],
    paths: [],
  };
  const storage = async (kind: "dir" | "file") => {
    const n = opts.nextStorage();
    const host = path.join(share.host, `storage${n}`);
    if (kind === "dir") await mkdir(host, { recursive: true });
    else await (await open(host, "a")).close();
    bundle.paths.push(host);
    return { host, guest: path.posix.join(share.guest, `storage${n}`) };
  };
  try {
    const root = await storage("dir");
    await mountRootfs(opts, spec, root.host);
    bundle.mounts.push(root.host);
    spec.root = { ...spec.root, path: root.guest };

    const mounts: OciMount[] = [];
    for (const m of spec.mounts ?? []) {
      if (m.destination === "/dev/shm") mounts.push(GUEST_SHM);
      else if (isBind(m) && m.source && path.isAbsolute(m.source)) {
        const st = await stat(m.source).catch(() => undefined);
        if (!st)
          throw new Error(
            `container ${containerId}: bind mount source ${m.source} (for ${m.destination}) does not exist`,
          );
        const s = await storage(st.isDirectory() ? "dir" : "file");
        await bindMount(m.source, s.host, (m.options ?? []).includes("ro"));
        bundle.mounts.push(s.host);
        mounts.push({ ...m, source: s.guest });
      } else mounts.push(m);
    }
    spec.mounts = mounts;

    const dir = path.join(share.host, containerId);
    await mkdir(dir, { recursive: true });
    bundle.paths.push(dir);
    await writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
    return bundle;
  } catch (err) {
    await releaseGuestBundle(bundle);
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

/** Unmounts in reverse order and removes the container's storage and bundle directories. */
export async function releaseGuestBundle(b: Pick<GuestBundle, "mounts" | "paths">): Promise<void> {
  for (const m of [...b.mounts].reverse()) await unmount(m);
  for (const p of b.paths) await rm(p, { recursive: true, force: true });
}
