import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdir, mkdtemp, open, readFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { hashFile } from "../lib/hash.ts";
import { $quiet } from "../lib/shell.ts";
import type { Stage } from "../lib/stage.ts";
import { StageError } from "../lib/stage-error.ts";
import {
  alignedPlacement,
  initialiseScript,
  misalignment,
  parseExtents,
  parseFreeBlocks,
  placementScript,
} from "../rootfs/aligned-file.ts";
import { extractNewc } from "../rootfs/cpio.ts";
import { FS_OFFSET, imageBytes, imageHeader } from "../rootfs/disk-layout.ts";
import { BLOCK_SIZE, imageSize, normaliseScript } from "../rootfs/ext4.ts";
import { type ArtifactManifest, type RootfsManifest, writeManifest } from "../rootfs/manifest.ts";
import { ROOTFS_ARCHIVE, ROOTFS_MANIFEST } from "./rootfs.ts";

export const IMAGE = "kuasar.img";
export const IMAGE_MANIFEST = "kuasar.img.manifest.json";
/** Fixed so the image is reproducible; also its hash seed. */
export const IMAGE_UUID = "5b1f6c2e-7a3d-4e8b-9c41-2d6f0a8e3b57";
/** The NVDIMM PFN device's uuid, fixed for the same reason. */
const PFN_UUID = "0c4e5a71-3f28-4d96-8b1e-7a52c9d0e6f4";
const LABEL = "kuasar-rootfs";

const MKE2FS_CONFIG = "pipeline/rootfs/mke2fs.conf";
/**
 * Files the guest maps whole and hot: node's 100 MiB binary. They are laid out on 2 MiB boundaries
 * (rootfs/aligned-file.ts), so a DAX-mounted image maps them with huge pages.
 */
const HUGE_MAPPED = ["usr/bin/node"];
const HUGE_PAGE = 2 * 1048576;

/**
 * bin/kuasar.img: the rootfs archive unpacked into scratch and turned into ext4 by `mke2fs -d` (no root or loop
 * device), stamped with debugfs so owners and every timestamp are fixed, then put behind the partition tables and
 * NVDIMM info block of disk-layout.ts, so it boots as a disk (vda1) or DAX-mapped (pmem0p1). The preferred boot
 * path: the guest reads only the blocks it touches, where an initrd is unpacked whole before init runs.
 */
export const imageStage: Stage = {
  name: "image",
  title: "Guest ext4 image (kuasar.img)",
  deps: ["rootfs"],
  async inputs(ctx) {
    const [helpers, stage, mke2fs, debugfs, e2fsck] = await Promise.all([
      ctx.treeDigest(path.join(ctx.repo, "pipeline/rootfs")),
      ctx.fileDigest(path.join(ctx.repo, "pipeline/stages/image.ts")),
      ctx.tool("mke2fs", "e2fsprogs", ["-V"]),
      ctx.tool("debugfs", "e2fsprogs", ["-V"]),
      ctx.tool("e2fsck", "e2fsprogs", ["-V"]),
    ]);
    return {
      sourceDateEpoch: ctx.options.sourceDateEpoch,
      code: { helpers, stage },
      tools: { mke2fs, debugfs, e2fsck },
    };
  },
  async build(ctx) {
    const epoch = ctx.options.sourceDateEpoch;
    const rootfs = ctx.dep("rootfs");
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-image-"));
    try {
      ctx.log(`unpacking ${ROOTFS_ARCHIVE}`);
      const cpio = path.join(scratch, "rootfs.cpio");
      await pipeline(createReadStream(path.join(rootfs, ROOTFS_ARCHIVE)), createGunzip(), createWriteStream(cpio));
      const root = path.join(scratch, "root");
      await mkdir(root);
      await chmod(root, 0o755);
      const entries = await extractNewc(cpio, root);
      await rm(cpio);

      // The huge-mapped files are left out of mke2fs -d and placed afterwards; each may need up to 2 MiB of padding.
      const held = path.join(scratch, "held");
      await mkdir(held);
      for (const f of HUGE_MAPPED) await rename(path.join(root, f), path.join(held, path.basename(f)));
      const size = imageSize(entries, { fraction: 0.05, mib: 8 + 2 * HUGE_MAPPED.length });
      const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
      ctx.log(`mke2fs: ${mib(size.contentBytes)} of content -> ${mib(size.bytes)} image, ${size.inodes} inodes`);
      const fs = path.join(scratch, "rootfs.ext4");
      // LC_ALL=C: mke2fs -d adds directory entries in scandir(alphasort) order, which follows the locale.
      const fixed = { E2FSPROGS_FAKE_TIME: String(epoch), LC_ALL: "C" };
      const env = { ...process.env, ...fixed };
      const extended = `hash_seed=${IMAGE_UUID},root_owner=0:0,nodiscard`;
      const mke2fs = ctx.$({ env: { ...env, MKE2FS_CONFIG: path.join(ctx.repo, MKE2FS_CONFIG) } });
      await mke2fs`mke2fs -q -F -t ext4 -T kuasar -N ${size.inodes} -L ${LABEL} -U ${IMAGE_UUID} \
        -E ${extended} -d ${root} ${fs} ${size.bytes / 1024}k`;

      for (const f of HUGE_MAPPED) {
        const at = await placeAligned(fs, f, path.join(held, path.basename(f)), scratch, env);
        ctx.log(`${f}: blocks ${at} on, on 2 MiB boundaries for huge DAX mappings`);
      }

      ctx.log(`debugfs: owners 0:0, timestamps ${epoch}`);
      const paths = entries.map((e) => e.name);
      await debugfsScript(fs, path.join(scratch, "normalise.debugfs"), normaliseScript(paths, epoch), env);

      ctx.log("e2fsck -fn");
      await ctx.$({ env })`e2fsck -f -n ${fs}`;

      const image = path.join(ctx.out, IMAGE);
      const fsBytes = (await stat(fs)).size;
      ctx.log(`layout: partition tables and NVDIMM info block, ext4 at ${mib(FS_OFFSET)}`);
      await writeFile(image, imageHeader(fsBytes, PFN_UUID));
      await pipeline(createReadStream(fs), createWriteStream(image, { flags: "a" }));
      await truncate(image, imageBytes(fsBytes));

      const base = JSON.parse(await readFile(path.join(rootfs, ROOTFS_MANIFEST), "utf8")) as RootfsManifest;
      const bytes = (await stat(image)).size;
      const manifest: ArtifactManifest = {
        ...base,
        components: { ...base.components, e2fsprogs: await ctx.tool("mke2fs", "e2fsprogs", ["-V"]) },
        artifact: {
          name: IMAGE,
          format: `MBR, partition 1: ext4 (no journal) at ${FS_OFFSET} bytes; NVDIMM PFN info block (fsdax)`,
          fsOffset: FS_OFFSET,
          size: bytes,
          sha256: await hashFile(image),
          uuid: IMAGE_UUID,
          label: LABEL,
          inodes: size.inodes,
        },
      };
      await writeManifest(path.join(ctx.out, IMAGE_MANIFEST), manifest);
      ctx.log(`${IMAGE}: ${mib(bytes)}`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: { [IMAGE]: IMAGE, [IMAGE_MANIFEST]: IMAGE_MANIFEST },
};

/** Runs a debugfs script read-write. debugfs reports a failed command on stderr and still exits 0, so its stderr is the verdict. */
async function debugfsScript(fs: string, file: string, script: string, env: NodeJS.ProcessEnv): Promise<void> {
  await writeFile(file, script);
  const r = await $quiet({ env, nothrow: true })`debugfs -w -f ${file} ${fs}`;
  const errors = r.stderr.split("\n").filter((l) => l.trim() && !/^debugfs \d/.test(l));
  if (r.exitCode !== 0 || errors.length > 0) {
    throw new StageError(
      "image",
      `debugfs -w -f ${file} ${fs} failed (exit ${r.exitCode}):\n${errors.slice(0, 20).join("\n")}`,
    );
  }
}

/**
 * Creates guestPath in fs from the local file src, its blocks one run from a 2 MiB boundary, and writes its bytes
 * there. Returns the first block.
 */
async function placeAligned(
  fs: string,
  guestPath: string,
  src: string,
  scratch: string,
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const align = HUGE_PAGE / BLOCK_SIZE;
  const { size, mode } = await stat(src);
  const blocks = Math.ceil(size / BLOCK_SIZE);
  const free = parseFreeBlocks((await $quiet({ env })`dumpe2fs ${fs}`).stdout);
  const { start, hold } = alignedPlacement(free, blocks, align);
  const empty = path.join(scratch, "empty");
  await writeFile(empty, "");
  await chmod(empty, mode & 0o7777);
  const name = path.basename(guestPath);
  const dir = `/${path.dirname(guestPath)}`;
  await debugfsScript(
    fs,
    path.join(scratch, "place.debugfs"),
    placementScript({ dir, name, emptyFile: empty, size, blocks, hold }),
    env,
  );
  const extents = parseExtents((await $quiet({ env })`debugfs -R ${`ex /${guestPath}`} ${fs}`).stdout);
  const wrong = misalignment(extents, blocks, align);
  if (wrong) throw new StageError("image", `/${guestPath} could not be laid out for huge pages: ${wrong}`);
  await debugfsScript(fs, path.join(scratch, "initialise.debugfs"), initialiseScript(`/${guestPath}`, extents), env);

  const [from, to] = await Promise.all([open(src, "r"), open(fs, "r+")]);
  try {
    const buf = Buffer.alloc(HUGE_PAGE);
    for (const e of extents) {
      for (let b = 0; b < e.length; b += align) {
        const offset = (e.logical + b) * BLOCK_SIZE;
        const { bytesRead } = await from.read(buf, 0, Math.min(HUGE_PAGE, (e.length - b) * BLOCK_SIZE), offset);
        await to.write(buf, 0, bytesRead, (e.physical + b) * BLOCK_SIZE);
      }
    }
  } finally {
    await Promise.all([from.close(), to.close()]);
  }
  return start;
}
