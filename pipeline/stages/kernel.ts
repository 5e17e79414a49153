import { copyFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { configure, loadRequest } from "../kernel/config.ts";
import { applyPatches, type KernelSource, materialise, resolveSource, sourceDigest } from "../kernel/source.ts";
import { leaseTree } from "../kernel/tree.ts";
import { hashFile, sha256 } from "../lib/hash.ts";
import type { BuildContext, KeyContext, Stage } from "../lib/stage.ts";

/** The helpers that shape the output (merge, configure, source handling); the runner already keys this file. */
const HELPERS = fileURLToPath(new URL("../kernel/", import.meta.url));

/** Fixed build identity so two builds of the same inputs are bit-identical. */
export function reproducibleEnv(epoch: number): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    // A parent make's jobserver flags would throttle or confuse the kernel's own -j.
    if (v !== undefined && !["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"].includes(k)) env[k] = v;
  }
  return {
    ...env,
    LC_ALL: "C",
    TZ: "UTC",
    SOURCE_DATE_EPOCH: String(epoch),
    KBUILD_BUILD_TIMESTAMP: new Date(epoch * 1000).toUTCString(),
    KBUILD_BUILD_USER: "kuasar",
    KBUILD_BUILD_HOST: "kuasar-vmm",
    KBUILD_BUILD_VERSION: "1",
    // Empty (not unset): otherwise setlocalversion may append "+" or a git describe of an enclosing repo.
    LOCALVERSION: "",
  };
}

/** Tools whose versions shape the output (part of the key); a missing one fails naming its Debian package. */
async function toolchain(ctx: KeyContext): Promise<Record<string, string>> {
  return {
    gcc: await ctx.tool("gcc", "gcc"),
    ld: await ctx.tool("ld", "binutils"),
    make: await ctx.tool("make", "make"),
    flex: await ctx.tool("flex", "flex"),
    bison: await ctx.tool("bison", "bison"),
    bc: await ctx.tool("bc", "bc"),
    // bzImage's payload compressor (CONFIG_KERNEL_ZSTD in fragments/base.config).
    zstd: await ctx.tool("zstd", "zstd"),
  };
}

function describeSource(src: KernelSource): string {
  return src.kind === "url" ? src.url : src.path;
}

/** Patches every guest kernel gets, applied in name order before any --kernel-patch. */
export const BUILTIN_PATCHES = "kernel-configs/patches";

/**
 * The built-in patches (recorded by their repo-relative path, so the manifest does not depend on where the checkout
 * is), then the --kernel-patch ones in the order given.
 */
async function patchList(ctx: KeyContext): Promise<{ file: string; path: string; sha256: string }[]> {
  const names = await readdir(path.join(ctx.repo, BUILTIN_PATCHES)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  const builtin = names
    .filter((n) => n.endsWith(".patch"))
    .sort()
    .map((n) => ({ file: `${BUILTIN_PATCHES}/${n}`, path: path.join(ctx.repo, BUILTIN_PATCHES, n) }));
  const given = [];
  for (const p of ctx.options.kernelPatches) {
    const file = path.resolve(ctx.repo, p);
    if (!(await stat(file).catch(() => undefined))?.isFile()) throw new Error(`kernel patch ${file} does not exist`);
    given.push({ file, path: file });
  }
  return Promise.all([...builtin, ...given].map(async (p) => ({ ...p, sha256: await ctx.fileDigest(p.path) })));
}

async function helperDigests(ctx: KeyContext): Promise<Record<string, string>> {
  const names = (await readdir(HELPERS)).filter((n) => n.endsWith(".ts")).sort();
  const out: Record<string, string> = {};
  for (const n of names) out[n] = await ctx.fileDigest(path.join(HELPERS, n));
  return out;
}

async function fragmentDigests(ctx: KeyContext, files: string[]): Promise<{ file: string; sha256: string }[]> {
  return Promise.all(files.map(async (file) => ({ file, sha256: await ctx.fileDigest(path.join(ctx.repo, file)) })));
}

/**
 * The guest kernel: Debian's 6.1 source (or a given tarball/dir/URL), patched, configured from
 * kernel-configs/ (allnoconfig or x86_64_defconfig base), checked value by value, built in-tree in the kept
 * build tree (pipeline/kernel/tree.ts), so a config change recompiles only what it touches.
 */
export const kernelStage: Stage = {
  name: "kernel",
  title: "Guest kernel (vmlinux.bin, bzImage)",
  deps: [],
  async inputs(ctx) {
    const o = ctx.options;
    const source = await resolveSource(o.kernelSource, o.kernelSha256, ctx.repo);
    // Parses and merges now, so a broken fragment fails before any stage builds.
    const { files } = await loadRequest(ctx.repo, o.hypervisors);
    const tools = await toolchain(ctx);
    await ctx.tool("tar", "tar");
    if (source.kind === "tarball" && source.path.endsWith(".xz")) await ctx.tool("xz", "xz-utils");
    const patches = await patchList(ctx);
    if (patches.length > 0) await ctx.tool("patch", "patch");
    return {
      helpers: await helperDigests(ctx),
      source: { kind: source.kind, sha256: await sourceDigest(source, ctx) },
      patches: patches.map((p) => p.sha256),
      profile: o.profile,
      hypervisors: [...new Set(o.hypervisors)].sort(),
      fragments: await fragmentDigests(ctx, files),
      tools,
      sourceDateEpoch: o.sourceDateEpoch,
    };
  },
  async build(ctx) {
    const t0 = performance.now();
    const o = ctx.options;
    const source = await resolveSource(o.kernelSource, o.kernelSha256, ctx.repo);
    const { files, requested } = await loadRequest(ctx.repo, o.hypervisors);
    const patches = await patchList(ctx);
    ctx.log(`merged ${files.length} fragment files: ${requested.size} requested symbols, no conflicts`);
    const srcDigest = await sourceDigest(source, ctx);
    const treeKey = sha256(
      JSON.stringify({ source: srcDigest, patches: patches.map((p) => p.sha256), tools: await toolchain(ctx) }),
    );
    const tree = await leaseTree(path.join(ctx.keepDir, "tree"), treeKey);
    // Without the kept tree (another build holds it): a private one next to out/, removed below.
    const scratch = tree?.dir ?? path.join(path.dirname(ctx.out), "kernel-build");
    try {
      let srcDir = tree?.srcDir;
      if (srcDir) {
        ctx.log(`reusing the kept build tree ${scratch}: make recompiles only what the config change touches`);
      } else {
        if (!tree) ctx.log("the kept build tree is in use by another build: building from scratch in a private tree");
        srcDir = await materialise(source, scratch, ctx.$, ctx.log);
        await applyPatches(
          srcDir,
          patches.map((p) => p.path),
          ctx.$,
          ctx.log,
        );
        await tree?.prepared(srcDir);
      }
      const env = reproducibleEnv(o.sourceDateEpoch);
      const make = async (args: string[]) => (await ctx.$({ cwd: srcDir, env })`make ARCH=x86_64 ${args}`).stdout;
      const version = (await make(["-s", "kernelversion"])).trim();
      const config = await configure({ srcDir, profile: o.profile, requested, make, log: ctx.log });

      const jobs = os.availableParallelism();
      ctx.log(`make -j${jobs} bzImage (linux ${version}, ${o.profile}; builds vmlinux first)`);
      await tree?.compiling();
      await make([`-j${jobs}`, "bzImage"]);

      // The symbol table and any debug info are useless to a VMM and carry nothing it boots from.
      ctx.log("strip vmlinux -> vmlinux.bin");
      await ctx.$`strip --strip-all -o ${path.join(ctx.out, "vmlinux.bin")} ${path.join(srcDir, "vmlinux")}`;
      await copyFile(path.join(srcDir, "arch/x86/boot/bzImage"), path.join(ctx.out, "bzImage"));
      await writeFile(path.join(ctx.out, "config"), config);
      await writeManifest(ctx, {
        version,
        source: { kind: source.kind, location: describeSource(source), sha256: srcDigest },
        patches: patches.map(({ file, sha256 }) => ({ file, sha256 })),
        fragments: await fragmentDigests(ctx, files),
        config,
        seconds: (performance.now() - t0) / 1000,
      });
      await tree?.done();
    } finally {
      if (tree) await tree.release();
      else await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: {
    "vmlinux.bin": "vmlinux.bin",
    bzImage: "bzImage",
    config: "vmlinux.config",
    "manifest.json": "vmlinux.manifest.json",
  },
};

interface ManifestFacts {
  version: string;
  source: { kind: string; location: string; sha256: string };
  patches: { file: string; sha256: string }[];
  fragments: { file: string; sha256: string }[];
  config: string;
  seconds: number;
}

async function writeManifest(ctx: BuildContext, f: ManifestFacts): Promise<void> {
  const artifact = async (name: string) => {
    const file = path.join(ctx.out, name);
    return { size: (await stat(file)).size, sha256: await hashFile(file) };
  };
  const manifest = {
    kernelVersion: f.version,
    profile: ctx.options.profile,
    hypervisors: [...new Set(ctx.options.hypervisors)].sort(),
    source: f.source,
    patches: f.patches,
    fragments: f.fragments,
    configSha256: sha256(f.config),
    artifacts: { "vmlinux.bin": await artifact("vmlinux.bin"), bzImage: await artifact("bzImage") },
    sourceDateEpoch: ctx.options.sourceDateEpoch,
    buildSeconds: Math.round(f.seconds),
  };
  await writeFile(path.join(ctx.out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  ctx.log(
    `linux ${f.version}: bzImage ${manifest.artifacts.bzImage.size} B, vmlinux.bin ${manifest.artifacts["vmlinux.bin"].size} B`,
  );
}
