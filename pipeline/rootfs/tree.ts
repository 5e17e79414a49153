import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";

export type EntryType = "dir" | "file" | "symlink";

/** One entry of a staged root, by guest-relative path (no leading slash). */
export interface TreeEntry {
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  /** Bytes of content (files) or of the link target (symlinks); 0 for directories. */
  size: number;
  target?: string;
}

/**
 * Every entry below root (root itself excluded), sorted by path in byte order, which also puts each directory
 * before its contents as cpio and mke2fs need. Anything but directories, regular files and symlinks is an error:
 * the guest tree has no device nodes (devtmpfs provides them).
 */
export async function listTree(root: string): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const walk = async (rel: string) => {
    for (const name of await readdir(path.join(root, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = await lstat(abs);
      const mode = st.mode & 0o7777;
      if (st.isDirectory()) {
        out.push({ path: r, type: "dir", mode, size: 0 });
        await walk(r);
      } else if (st.isFile()) out.push({ path: r, type: "file", mode, size: st.size });
      else if (st.isSymbolicLink()) {
        const target = await readlink(abs);
        out.push({ path: r, type: "symlink", mode: 0o777, size: Buffer.byteLength(target), target });
      } else throw new Error(`${abs} is neither a file, a directory nor a symlink; the guest tree cannot hold it`);
    }
  };
  await walk("");
  return out.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
}
