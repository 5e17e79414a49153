import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ToolShell } from "../lib/shell.ts";
import type { KeyContext } from "../lib/stage.ts";

/** Debian bookworm's `linux-source-6.1` package: the default, and buildable offline. */
export const DEBIAN_SOURCE = "/usr/src/linux-source-6.1.tar.xz";

export type KernelSource =
  | { kind: "tarball"; path: string; sha256?: string }
  | { kind: "dir"; path: string }
  | { kind: "url"; url: string; sha256: string };

export class SourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SourceError";
  }
}

/** Interprets options.kernelSource / options.kernelSha256 (paths relative to the repo). */
export async function resolveSource(
  source: string | undefined,
  sha256: string | undefined,
  repo: string,
): Promise<KernelSource> {
  if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new SourceError(`kernel source sha256 '${sha256}' is not 64 lowercase hex digits`);
  }
  if (source !== undefined && /^https?:\/\//.test(source)) {
    if (sha256 === undefined) {
      throw new SourceError(
        `kernel source ${source} is a URL: give its sha256 too (--kernel-sha256 / options.kernelSha256), e.g. from the release's sha256sums`,
      );
    }
    return { kind: "url", url: source, sha256 };
  }
  const file = source === undefined ? DEBIAN_SOURCE : path.resolve(repo, source);
  const st = await stat(file).catch(() => undefined);
  if (!st) {
    throw new SourceError(
      source === undefined
        ? `Debian's kernel source ${DEBIAN_SOURCE} is missing: apt-get install -y linux-source-6.1 (or pass --kernel-source)`
        : `kernel source ${file} does not exist`,
    );
  }
  if (st.isDirectory()) {
    if (sha256 !== undefined) {
      throw new SourceError(`kernel source ${file} is a directory; a sha256 applies only to a tarball or URL`);
    }
    return { kind: "dir", path: file };
  }
  return sha256 === undefined ? { kind: "tarball", path: file } : { kind: "tarball", path: file, sha256 };
}

/** The content digest that stands for the source in the cache key; a tarball's is checked against a given sha256. */
export async function sourceDigest(
  src: KernelSource,
  ctx: Pick<KeyContext, "fileDigest" | "treeDigest">,
): Promise<string> {
  if (src.kind === "url") return src.sha256;
  if (src.kind === "dir") return ctx.treeDigest(src.path);
  const actual = await ctx.fileDigest(src.path);
  if (src.sha256 !== undefined && actual !== src.sha256) throw mismatch(src.path, src.sha256, actual);
  return actual;
}

function mismatch(source: string, expected: string, actual: string): SourceError {
  return new SourceError(
    `kernel source ${source} has sha256 ${actual}, expected ${expected}; the file is not the one the digest was taken from (fix --kernel-sha256 or the source)`,
  );
}

/** Downloads url to dest, hashing on the way; nothing is left at dest unless the digest matches. */
export async function download(url: string, sha256: string, dest: string): Promise<void> {
  const res = await fetch(url).catch((err: Error) => {
    throw new SourceError(`downloading kernel source ${url} failed: ${err.message}`);
  });
  if (!res.ok || !res.body) throw new SourceError(`downloading kernel source ${url} failed: HTTP ${res.status}`);
  const part = `${dest}.part`;
  const hash = createHash("sha256");
  const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
  body.on("data", (chunk: Buffer) => hash.update(chunk));
  await pipeline(body, createWriteStream(part));
  const actual = hash.digest("hex");
  if (actual !== sha256) {
    await rm(part, { force: true });
    throw mismatch(url, sha256, actual);
  }
  await rename(part, dest);
}

/** The kernel tree inside an extracted archive: the directory itself or its single top-level directory. */
export async function findKernelRoot(dir: string, source: string): Promise<string> {
  const isKernel = async (d: string) =>
    (await stat(path.join(d, "Makefile")).catch(() => undefined))?.isFile() === true &&
    (await stat(path.join(d, "Kconfig")).catch(() => undefined))?.isFile() === true;
  if (await isKernel(dir)) return dir;
  const entries = await readdir(dir, { withFileTypes: true });
  if (entries.length === 1 && entries[0]!.isDirectory()) {
    const inner = path.join(dir, entries[0]!.name);
    if (await isKernel(inner)) return inner;
  }
  throw new SourceError(`kernel source ${source} does not look like a Linux tree (no top-level Makefile and Kconfig)`);
}

/**
 * Puts a private, writable copy of the source below scratch and returns its root: a tarball or a downloaded
 * URL is extracted, a directory copied (the build runs in-tree and patches edit it, so the original stays untouched).
 */
export async function materialise(
  src: KernelSource,
  scratch: string,
  $: ToolShell,
  log: (l: string) => void,
): Promise<string> {
  const tree = path.join(scratch, "src");
  await mkdir(tree, { recursive: true });
  if (src.kind === "dir") {
    log(`copying ${src.path}`);
    const contents = `${src.path}/.`;
    await $`cp -a ${contents} ${tree}`;
    return findKernelRoot(tree, src.path);
  }
  const archive =
    src.kind === "tarball"
      ? src.path
      : path.join(scratch, `download-${path.basename(new URL(src.url).pathname) || "kernel.tar"}`);
  if (src.kind === "url") {
    log(`downloading ${src.url}`);
    await download(src.url, src.sha256, archive);
  }
  log(`extracting ${archive}`);
  await $`tar -xf ${archive} -C ${tree}`;
  return findKernelRoot(tree, src.kind === "url" ? src.url : src.path);
}

/** Applies the ordered patch series with `patch -p1`; the first failure names the patch. */
export async function applyPatches(
  srcDir: string,
  patches: string[],
  $: ToolShell,
  log: (l: string) => void,
): Promise<void> {
  for (const [i, file] of patches.entries()) {
    log(`patch ${i + 1}/${patches.length}: ${file}`);
    try {
      await $`patch -p1 --forward --batch -d ${srcDir} -i ${file}`;
    } catch (err) {
      throw new SourceError(
        `kernel patch ${file} (${i + 1} of ${patches.length}) does not apply:\n${(err as Error).message}`,
      );
    }
  }
}
