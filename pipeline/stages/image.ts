import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { hashFile } from "../lib/hash.ts";
import { $quiet } from "../lib/shell.ts";
import type { Stage } from "../lib/stage.ts";
import { StageError } from "../lib/stage-error.ts";
import { extractNewc } from "../rootfs/cpio.ts";
import { FS_OFFSET, imageBytes, imageHeader } from "../rootfs/disk-layout.ts";
import { imageSize, normaliseScript } from "../rootfs/ext4.ts";
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

      const size = imageSize(entries);
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

      ctx.log(`debugfs: owners 0:0, timestamps ${epoch}`);
      const script = path.join(scratch, "normalise.debugfs");
      const paths = entries.map((e) => e.name);
      await writeFile(script, normaliseScript(paths, epoch));
      // debugfs reports a failed command on stderr and still exits 0, so its stderr is the verdict.
      const r = await $quiet({ env, nothrow: true })`debugfs -w -f ${script} ${fs}`;
      const errors = r.stderr.split("\n").filter((l) => l.trim() && !/^debugfs \d/.test(l));
      if (r.exitCode !== 0 || errors.length > 0) {
        throw new StageError(
          "image",
          `debugfs -w -f ${script} ${fs} failed (exit ${r.exitCode}):\n${errors.slice(0, 20).join("\n")}`,
        );
      }

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
