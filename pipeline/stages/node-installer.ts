import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { IMAGE_ARCHIVE, imageName } from "../../installers/node-installer/image-name.ts";
import { BIN_DIR, bundleName, NODE_INSTALLER_CJS } from "../dist/names.ts";
import { artifactNames, buildNodeInstallerImage, RUNTIME_ELFS } from "../installer-image/image.ts";
import type { Stage } from "../lib/stage.ts";
import { lddClosure } from "../rootfs/elf.ts";
import { distStage, VERSION } from "./dist.ts";

/** Code the image is made from besides this file and the bundle: the image writer and the library walk. */
const CODE_TREES = ["pipeline/installer-image"];
const CODE_FILES = ["pipeline/rootfs/elf.ts"];

/**
 * kuasar-vmm-node-installer.tar: an OCI image archive of the Kubernetes node installer (installers/kubernetes),
 * made from the release bundle's own files (its bin/ and lib/node-installer.cjs, unpacked from the tar.zst), so the
 * image and the bundle cannot carry different artifacts; plus node and nsenter with their libraries to run it.
 */
export const nodeInstallerStage: Stage = {
  name: "node-installer",
  title: "Node installer OCI image (kuasar-vmm-node-installer.tar)",
  deps: [distStage.name],
  async inputs(ctx) {
    for (const e of RUNTIME_ELFS) {
      if (!existsSync(e.path)) throw new Error(`${e.path} is missing; install it with: apt-get install -y ${e.pkg}`);
    }
    const elfs = RUNTIME_ELFS.map((e) => e.path);
    const hostElfs: Record<string, string> = {};
    for (const f of [...elfs, ...(await lddClosure(elfs)).map((l) => l.path)]) hostElfs[f] = await ctx.fileDigest(f);
    const code: Record<string, string> = {};
    for (const t of CODE_TREES) code[t] = await ctx.treeDigest(path.join(ctx.repo, t));
    for (const f of CODE_FILES) code[f] = await ctx.fileDigest(path.join(ctx.repo, f));
    return {
      version: VERSION,
      sourceDateEpoch: ctx.options.sourceDateEpoch,
      arch: process.arch,
      // The layers are gzip'd by Node's zlib: another zlib may compress to other bytes.
      zlib: process.versions.zlib,
      tar: await ctx.tool("tar", "tar"),
      hostElfs,
      code,
    };
  },
  async build(ctx) {
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-node-installer-"));
    try {
      const unpacked = path.join(scratch, "bundle");
      await mkdir(unpacked);
      const bundle = path.join(ctx.dep(distStage.name), bundleName(VERSION));
      ctx.log(`unpacking ${path.basename(bundle)}`);
      await ctx.$`tar --zstd -xf ${bundle} -C ${unpacked}`;
      const artifacts = Object.fromEntries(artifactNames().map((n) => [n, path.join(unpacked, BIN_DIR, n)]));
      ctx.log(`writing ${imageName(VERSION)} (${artifactNames().length} artifacts, gzip -6)`);
      const manifest = await buildNodeInstallerImage({
        artifacts,
        installer: path.join(unpacked, NODE_INSTALLER_CJS),
        elfs: RUNTIME_ELFS.map((e) => e.path),
        version: VERSION,
        epoch: ctx.options.sourceDateEpoch,
        out: path.join(ctx.out, IMAGE_ARCHIVE),
        scratch,
      });
      ctx.log(`${imageName(VERSION)}@${manifest.digest}`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: { [IMAGE_ARCHIVE]: IMAGE_ARCHIVE },
};
