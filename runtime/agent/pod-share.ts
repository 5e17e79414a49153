import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { GUEST_POD_FILES_DIR, GUEST_SHARE, POD_FILES, SHARE_TAG } from "../contract/share.ts";
import { ensureMount, mountNow, mountPoints, Pid1Error, type Pid1Options, rooted } from "./mounts.ts";

/**
 * Mounts the host's share (tag `kuasar`) on /run/kuasar/state. 9p: virtio transport with 9p2000.L (POSIX
 * semantics); msize 256 KiB moves large reads and writes in few round trips while staying under the virtio
 * transport's 512 KiB limit; cache=mmap keeps host changes visible at once yet still lets containers mmap files.
 */
export function mountShare(type: "9p" | "virtiofs", opts: Pid1Options = {}): boolean {
  const target = rooted(opts, GUEST_SHARE);
  if (type === "virtiofs") {
    return ensureMount(
      {
        source: SHARE_TAG,
        target,
        type: "virtiofs",
        options: [],
        hint: "the guest kernel needs CONFIG_VIRTIO_FS and the VM a vhost-user-fs device with tag kuasar",
      },
      opts.mounts,
    );
  }
  return ensureMount(
    {
      source: SHARE_TAG,
      target,
      type: "9p",
      options: ["trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"],
      hint: "the guest kernel needs CONFIG_9P_FS and CONFIG_NET_9P_VIRTIO and the VM a virtio-9p device with mount tag kuasar",
    },
    opts.mounts,
  );
}

/**
 * Copies the pod's files the host prepared (read-only in the share) to the guest's own writable place, where every
 * container of the pod binds them as a runc pod's containers bind the pod's files, and binds them over the VM's /etc.
 * Returns the /etc paths it bound; a second call (the agent restarted) binds nothing again.
 */
export function bindEtcFiles(opts: Pid1Options = {}): string[] {
  const bound: string[] = [];
  const mounted = opts.mounts ?? mountPoints();
  const podDir = rooted(opts, GUEST_POD_FILES_DIR);
  mkdirSync(podDir, { recursive: true });
  for (const name of POD_FILES) {
    const shared = path.join(rooted(opts, GUEST_SHARE), name);
    const source = path.join(podDir, name);
    const target = path.join(rooted(opts, "/etc"), name);
    if (!existsSync(shared) || mounted.has(target)) continue;
    if (!existsSync(source)) copyFileSync(shared, source);
    if (!existsSync(target)) {
      try {
        mkdirSync(path.dirname(target), { recursive: true });
        writeFileSync(target, "");
      } catch (e) {
        throw new Pid1Error(
          `cannot create ${target} to bind ${source} over it: ${(e as Error).message}; add the file to the guest image`,
        );
      }
    }
    const failed = mountNow(source, target, "bind", []);
    if (failed !== undefined) throw new Pid1Error(`binding ${source} over ${target} failed: ${failed}`);
    bound.push(target);
  }
  return bound;
}

/** Sets the VM's hostname from the share's hostname file, when there is one. */
export function setHostnameFromShare(opts: Pid1Options = {}): string | undefined {
  let name = "";
  try {
    name = readFileSync(path.join(rooted(opts, GUEST_SHARE), "hostname"), "utf8").trim();
  } catch {
    // No hostname file: the pod keeps the VM's.
  }
  if (!name) return undefined;
  try {
    writeFileSync(rooted(opts, "/proc/sys/kernel/hostname"), name);
  } catch (e) {
    throw new Pid1Error(`setting the hostname to "${name}" failed: ${(e as Error).message}`);
  }
  return name;
}
