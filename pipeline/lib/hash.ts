import { createHash, type Hash } from "node:crypto";
import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { hashFile } from "../../installers/file-digest.ts";

export function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

export { hashFile };

/** Digest of a directory tree: relative paths, modes, link targets and contents, in sorted order. */
export async function hashTree(
  dir: string,
  opts: { ignore?: (rel: string) => boolean; fileDigest?: (file: string) => Promise<string> } = {},
): Promise<string> {
  const h = createHash("sha256");
  await walkInto(h, dir, "", opts.ignore ?? (() => false), opts.fileDigest ?? hashFile);
  return h.digest("hex");
}

async function walkInto(
  h: Hash,
  root: string,
  rel: string,
  ignore: (rel: string) => boolean,
  fileDigest: (file: string) => Promise<string>,
): Promise<void> {
  const names = (await readdir(path.join(root, rel))).sort();
  for (const name of names) {
    const r = rel ? `${rel}/${name}` : name;
    if (ignore(r)) continue;
    const abs = path.join(root, r);
    const st = await lstat(abs);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) h.update(`L ${r} ${await readlink(abs)}\n`);
    else if (st.isDirectory()) {
      h.update(`D ${r} ${mode}\n`);
      await walkInto(h, root, r, ignore, fileDigest);
    } else if (st.isFile()) h.update(`F ${r} ${mode} ${await fileDigest(abs)}\n`);
  }
}
