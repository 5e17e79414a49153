import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { IMAGE_ARCHIVE, imageName, packageVersion } from "../../installers/node-installer/image-name.ts";
import { artifactNames, buildNodeInstallerImage, bundleInstaller, RUNTIME_ELFS } from "../installer-image/image.ts";
import type { Stage } from "../lib/stage.ts";
import { StageError } from "../lib/stage-error.ts";
import { lddClosure } from "../rootfs/elf.ts";
import { imageStage } from "./image.ts";
import { initrdStage } from "./initrd.ts";
import { kernelStage } from "./kernel.ts";
import { sandboxerStage } from "./sandboxer.ts";
import { unitsStage } from "./units.ts";
import { vmmTaskStage } from "./vmm-task.ts";

/** The stages whose published files install-vmm lays out. */
const PUBLISHERS = [sandboxerStage, vmmTaskStage, kernelStage, imageStage, initrdStage, unitsStage];

/** bin/ name -> the stage publishing it and its file in that stage's output. */
function sources(): Map<string, { stage: string; rel: string }> {
  const m = new Map<string, { stage: string; rel: string }>();
  for (const st of PUBLISHERS)
    for (const [rel, name] of Object.entries(st.publish)) m.set(name, { stage: st.name, rel });
  return m;
}

/** Code the image is made from besides this file: the installer, what it bundles, and the image writer. */
const CODE_TREES = ["runtime/node-installer", "pipeline/node-installer", "pipeline/lib"];
const CODE_FILES = ["pipeline/install.ts", "pipeline/rootfs/elf.ts", "package-lock.json"];

/**
 * kuasar-vmm-node-installer.tar: an OCI image archive of the Kubernetes node installer (installers/kubernetes),
 * carrying every artifact install-vmm lays out, node and nsenter with their libraries, and the bundled installer.
 */
export const nodeInstallerStage: Stage = {
  name: "node-installer",
  title: "Node installer OCI image (kuasar-vmm-node-installer.tar)",
  deps: [...new Set(artifactNames().flatMap((n) => sources().get(n)?.stage ?? []))],
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
      version: await packageVersion(ctx.repo),
      sourceDateEpoch: ctx.options.sourceDateEpoch,
      arch: process.arch,
      // The layers are gzip'd by Node's zlib: another zlib may compress to other bytes.
      zlib: process.versions.zlib,
      hostElfs,
      code,
    };
  },
  async build(ctx) {
    const known = sources();
    const artifacts: Record<string, string> = {};
    for (const name of artifactNames()) {
      const src = known.get(name);
      if (!src) {
        throw new StageError(
          "node-installer",
          `install-vmm lays out '${name}', which no stage in pipeline/stages/node-installer.ts PUBLISHERS publishes; add the stage that builds it there`,
        );
      }
      artifacts[name] = path.join(ctx.dep(src.stage), src.rel);
    }
    const version = await packageVersion(ctx.repo);
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-node-installer-"));
    try {
      ctx.log("bundling runtime/node-installer/cli.ts");
      const installer = path.join(scratch, "installer.cjs");
      await bundleInstaller(installer);
      ctx.log(`writing ${imageName(version)} (${artifactNames().length} artifacts, gzip -6)`);
      const manifest = await buildNodeInstallerImage({
        artifacts,
        installer,
        elfs: RUNTIME_ELFS.map((e) => e.path),
        version,
        epoch: ctx.options.sourceDateEpoch,
        out: path.join(ctx.out, IMAGE_ARCHIVE),
        scratch,
      });
      ctx.log(`${imageName(version)}@${manifest.digest}`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: { [IMAGE_ARCHIVE]: IMAGE_ARCHIVE },
};
