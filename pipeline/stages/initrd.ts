import { copyFile, link, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { hashFile } from "../lib/hash.ts";
import type { Stage } from "../lib/stage.ts";
import { type ArtifactManifest, type RootfsManifest, writeManifest } from "../rootfs/manifest.ts";
import { ROOTFS_ARCHIVE, ROOTFS_MANIFEST } from "./rootfs.ts";

export const INITRD = "kuasar.initrd";
export const INITRD_MANIFEST = "kuasar.initrd.manifest.json";

/**
 * bin/kuasar.initrd: the rootfs stage's archive as it is (a sorted newc cpio, gzip -n, which CONFIG_RD_GZIP
 * unpacks), hard-linked out of the cache so the bytes are stored once. The kernel runs /init -> /sbin/init.
 * Under TCG the kernel unpacks the whole initrd before init runs (a 44 MB one cost ~11 s), so kuasar.img is
 * the preferred boot path; the initrd is for VMMs or tests without a block device.
 */
export const initrdStage: Stage = {
  name: "initrd",
  title: "Guest initrd (kuasar.initrd)",
  deps: ["rootfs"],
  async inputs(ctx) {
    return { code: await ctx.fileDigest(path.join(ctx.repo, "pipeline/stages/initrd.ts")) };
  },
  async build(ctx) {
    const rootfs = ctx.dep("rootfs");
    const initrd = path.join(ctx.out, INITRD);
    await link(path.join(rootfs, ROOTFS_ARCHIVE), initrd).catch(() =>
      copyFile(path.join(rootfs, ROOTFS_ARCHIVE), initrd),
    );
    const base = JSON.parse(await readFile(path.join(rootfs, ROOTFS_MANIFEST), "utf8")) as RootfsManifest;
    const bytes = (await stat(initrd)).size;
    const manifest: ArtifactManifest = {
      ...base,
      artifact: {
        name: INITRD,
        format: "newc cpio, gzip",
        size: bytes,
        sha256: await hashFile(initrd),
        init: "/init -> /sbin/init",
      },
    };
    await writeManifest(path.join(ctx.out, INITRD_MANIFEST), manifest);
    ctx.log(`${INITRD}: ${(bytes / 1048576).toFixed(1)} MiB`);
  },
  publish: { [INITRD]: INITRD, [INITRD_MANIFEST]: INITRD_MANIFEST },
};
