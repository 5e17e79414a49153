import { readFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildDist } from "../dist/build.ts";
import { bundleName, SUMS, sbomName, unameArch } from "../dist/names.ts";
import { artifactNames } from "../installer-image/image.ts";
import type { Stage } from "../lib/stage.ts";
import { StageError } from "../lib/stage-error.ts";
import { AGENT_DIR } from "../rootfs/validate.ts";
import { imageStage } from "./image.ts";
import { initrdStage } from "./initrd.ts";
import { kernelStage } from "./kernel.ts";
import { sandboxerStage } from "./sandboxer.ts";
import { unitsStage } from "./units.ts";
import { vmmTaskStage } from "./vmm-task.ts";

/** The stages whose published files install-vmm lays out. */
const PUBLISHERS = [sandboxerStage, vmmTaskStage, kernelStage, imageStage, initrdStage, unitsStage];

/** The task stage's scripts by their guest path (the rootfs stage copies them to AGENT_DIR): the SBOM reads them. */
async function guestScripts(taskOut: string): Promise<Record<string, string>> {
  const js = (await readdir(taskOut)).filter((n) => n.endsWith(".js")).sort();
  return Object.fromEntries(js.map((n) => [`/${AGENT_DIR}/${n}`, path.join(taskOut, n)]));
}

/** bin/ name -> the stage publishing it and its file in that stage's output. */
export function artifactSources(): Map<string, { stage: string; rel: string }> {
  const m = new Map<string, { stage: string; rel: string }>();
  for (const st of PUBLISHERS)
    for (const [rel, name] of Object.entries(st.publish)) m.set(name, { stage: st.name, rel });
  return m;
}

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The release's version: package.json's, read once (the stage's publish names carry it). */
export const VERSION = (JSON.parse(readFileSync(path.join(repo, "package.json"), "utf8")) as { version: string })
  .version;

/** Code the bundle is made from besides this file: the installers it carries and the writers. */
const CODE_TREES = ["installers", "pipeline/dist", "pipeline/installer-image"];
const CODE_FILES = ["pipeline/lib/bundle.ts", "pipeline/rootfs/validate.ts", "package-lock.json"];

/**
 * dist/kuasar-vmm-<version>-<arch>.tar.zst: everything install-vmm lays out with an install.sh that needs no Node.js
 * on the host, its CycloneDX SBOM (inside and beside) and SHA256SUMS (of every file inside; beside, of the bundle
 * and the SBOM). Bit-reproducible from the same inputs (see pipeline/dist/archive.ts).
 */
export const distStage: Stage = {
  name: "dist",
  title: "Release bundle (tar.zst, SBOM, SHA256SUMS)",
  deps: [...new Set([...artifactNames().flatMap((n) => artifactSources().get(n)?.stage ?? []), vmmTaskStage.name])],
  async inputs(ctx) {
    const code: Record<string, string> = {};
    for (const t of CODE_TREES) code[t] = await ctx.treeDigest(path.join(ctx.repo, t));
    for (const f of CODE_FILES) code[f] = await ctx.fileDigest(path.join(ctx.repo, f));
    return {
      version: VERSION,
      sourceDateEpoch: ctx.options.sourceDateEpoch,
      arch: unameArch(),
      zstd: await ctx.tool("zstd", "zstd"),
      // The SBOM names the Debian packages (and versions) the guest's files came from, and the guest files that
      // are the project's own (rootfs/).
      dpkg: await ctx.fileDigest("/var/lib/dpkg/status"),
      osRelease: await ctx.fileDigest("/etc/os-release"),
      rootfsStatic: await ctx.treeDigest(path.join(ctx.repo, "rootfs")),
      code,
    };
  },
  async build(ctx) {
    const known = artifactSources();
    const artifacts: Record<string, string> = {};
    for (const name of artifactNames()) {
      const src = known.get(name);
      if (!src) {
        throw new StageError(
          "dist",
          `install-vmm lays out '${name}', which no stage in pipeline/stages/dist.ts PUBLISHERS publishes; add the stage that builds it there`,
        );
      }
      artifacts[name] = path.join(ctx.dep(src.stage), src.rel);
    }
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-dist-"));
    try {
      const r = await buildDist({
        repo: ctx.repo,
        version: VERSION,
        epoch: ctx.options.sourceDateEpoch,
        artifacts,
        guestScripts: await guestScripts(ctx.dep(vmmTaskStage.name)),
        out: ctx.out,
        scratch,
        log: ctx.log,
      });
      ctx.log(`${path.basename(r.bundle)}: ${r.files.length} entries`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: Object.fromEntries([bundleName(VERSION), sbomName(VERSION), SUMS].map((n) => [n, n])),
  publishTo: "dist",
};
