import { writeFile } from "node:fs/promises";
import path from "node:path";
import { hashFile } from "../lib/hash.ts";
import type { EntryType, TreeEntry } from "./tree.ts";

export interface ManifestEntry {
  path: string;
  type: EntryType;
  /** Octal permission bits, e.g. "0755". */
  mode: string;
  size: number;
  sha256?: string;
  target?: string;
}

/** What is inside the guest root and which upstream components it came from. */
export interface RootfsManifest {
  schema: "kuasar-vmm/rootfs-manifest/v1";
  sourceDateEpoch: number;
  /** Version lines of the components and tools the tree was made with (busybox, runc, node, ...). */
  components: Record<string, string>;
  totals: { entries: number; files: number; directories: number; symlinks: number; bytes: number };
  entries: ManifestEntry[];
}

/** An artifact (image or initrd) and the root it holds. */
export interface ArtifactManifest extends RootfsManifest {
  artifact: { name: string; format: string; size: number; sha256: string } & Record<string, string | number>;
}

export async function buildManifest(
  root: string,
  tree: TreeEntry[],
  components: Record<string, string>,
  sourceDateEpoch: number,
): Promise<RootfsManifest> {
  const entries: ManifestEntry[] = [];
  for (const e of tree) {
    const m: ManifestEntry = {
      path: `/${e.path}`,
      type: e.type,
      mode: `0${e.mode.toString(8).padStart(3, "0")}`,
      size: e.size,
    };
    if (e.type === "file") m.sha256 = await hashFile(path.join(root, e.path));
    if (e.type === "symlink") m.target = e.target;
    entries.push(m);
  }
  const count = (t: EntryType) => tree.filter((e) => e.type === t).length;
  return {
    schema: "kuasar-vmm/rootfs-manifest/v1",
    sourceDateEpoch,
    components,
    totals: {
      entries: tree.length,
      files: count("file"),
      directories: count("dir"),
      symlinks: count("symlink"),
      bytes: tree.filter((e) => e.type === "file").reduce((n, e) => n + e.size, 0),
    },
    entries,
  };
}

export async function writeManifest(file: string, manifest: RootfsManifest | ArtifactManifest): Promise<void> {
  await writeFile(file, `${JSON.stringify(manifest, null, 2)}\n`);
}
