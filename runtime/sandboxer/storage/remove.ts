import { lstat, readdir, rmdir, unlink } from "node:fs/promises";
import path from "node:path";
import { mountPoints } from "./mount.ts";

/**
 * Removes a directory tree without ever crossing into another mount: a mount point below root (listed in mountinfo,
 * which also catches a bind from the same device, or on another st_dev) stops the removal with an error naming it,
 * so a volume still mounted in a sandbox directory is never emptied. Symbolic links are removed, never followed.
 * A missing root is not an error.
 */
export async function removeTree(root: string): Promise<void> {
  const top = await lstat(root).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw e;
  });
  if (!top) return;
  const mounted = new Set(await mountPoints());
  const refuse = (p: string, why: string) => {
    throw new Error(`refusing to remove ${p}: ${why}; unmount it first (the rest of ${root} is left in place)`);
  };
  if (mounted.has(root)) refuse(root, "it is a mount point");
  if (!top.isDirectory()) {
    await unlink(root);
    return;
  }
  const walk = async (dir: string): Promise<void> => {
    for (const ent of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (mounted.has(p)) refuse(p, "it is a mount point");
      if (!ent.isDirectory()) {
        await unlink(p).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== "ENOENT") throw e;
        });
        continue;
      }
      const st = await lstat(p);
      if (st.dev !== top.dev) refuse(p, `it is on another file system (device ${st.dev}, not ${top.dev})`);
      await walk(p);
      await rmdir(p);
    }
  };
  await walk(root);
  await rmdir(root);
}
