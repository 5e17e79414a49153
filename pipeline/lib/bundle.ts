import { chmod } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { KeyContext } from "./stage.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The layers below every program (docs/development.md#layers): each bundle is built from them and its own folders. */
export const SHARED_LAYERS = [
  "runtime/contract",
  "runtime/log",
  "runtime/trace",
  "runtime/protos",
  "runtime/cgroups",
  "runtime/ttrpc",
  "runtime/transport",
  "runtime/streaming",
  "runtime/text",
];

/**
 * What a bundle is made of: the source trees, the locked dependencies and this bundler's own settings, which
 * shape the output as much as the sources do.
 */
export async function bundleInputs(ctx: KeyContext, sources: string[]) {
  const trees: Record<string, string> = {};
  for (const dir of sources) trees[dir] = await ctx.treeDigest(path.join(ctx.repo, dir));
  return {
    trees,
    lock: await ctx.fileDigest(path.join(ctx.repo, "package-lock.json")),
    bundler: await ctx.fileDigest(fileURLToPath(import.meta.url)),
  };
}

/**
 * Bundles a TypeScript entry into one CommonJS file for Node 20. CommonJS because the shipped files
 * have no package.json beside them (an extensionless /usr/local/bin/vmm-sandboxer would not load as ESM);
 * import.meta.url is mapped to the bundle's own file URL so addon lookups next to the bundle still work.
 */
export async function bundleNode(entry: string, outfile: string, opts: { executable?: boolean } = {}): Promise<void> {
  const shebang = opts.executable ? "#!/usr/bin/env node\n" : "";
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    minify: false,
    sourcemap: false,
    legalComments: "none",
    logLevel: "silent",
    // esbuild names each module in a comment, relative to its working directory: the repo, whatever the cwd.
    absWorkingDir: REPO,
    define: { "import.meta.url": "__bundle_url" },
    banner: { js: `${shebang}const __bundle_url = require("node:url").pathToFileURL(__filename).href;` },
  });
  if (opts.executable) await chmod(outfile, 0o755);
}
