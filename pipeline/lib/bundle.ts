import { chmod } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Metafile, type Plugin } from "esbuild";
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

export interface BundleOptions {
  /** Adds a `#!/usr/bin/env node` line and the executable bit. */
  executable?: boolean;
  /**
   * Modules the entry loads only with import(), each bundled into a file of its own beside the bundle (repo-relative
   * source -> file name), so the main bundle neither carries nor compiles them until the first import.
   */
  apart?: Record<string, string>;
}

/**
 * Bundles a TypeScript entry into one CommonJS file for Node 20. CommonJS because the shipped files
 * have no package.json beside them (an extensionless /usr/local/bin/vmm-sandboxer would not load as ESM);
 * import.meta.url is mapped to the bundle's own file URL so addon lookups next to the bundle still work.
 */
export async function bundleNode(entry: string, outfile: string, opts: BundleOptions = {}): Promise<void> {
  const shebang = opts.executable ? "#!/usr/bin/env node\n" : "";
  const apart = new Map(Object.entries(opts.apart ?? {}).map(([src, file]) => [path.join(REPO, src), file]));
  const main = packagesOf(await esbuildBundle(entry, outfile, shebang, apart));
  for (const [src, file] of apart) {
    const split = await esbuildBundle(src, path.join(path.dirname(outfile), file), "", new Map());
    // A package in both files would be loaded twice, with two copies of its state and memory.
    const twice = [...packagesOf(split)].filter((p) => main.has(p));
    if (twice.length) {
      throw new Error(
        `${path.relative(REPO, src)} is bundled apart from ${path.relative(REPO, entry)}, but both include ${twice.join(", ")}: pass what it needs from the main bundle in as arguments instead of importing it`,
      );
    }
  }
  if (opts.executable) await chmod(outfile, 0o755);
}

async function esbuildBundle(
  entry: string,
  outfile: string,
  shebang: string,
  apart: Map<string, string>,
): Promise<Metafile> {
  // An apart module becomes a stub that loads its file at run time. Not import(): a V8 startup snapshot of the
  // bundle (the agent's) has no dynamic import callback, and the stub runs only when first imported.
  const plugins: Plugin[] = [
    {
      name: "apart",
      setup(b) {
        // Modules of this repo, imported by relative path.
        b.onResolve({ filter: /^\./ }, (args) => {
          const abs = path.resolve(args.resolveDir, args.path);
          const file = apart.get(abs) ?? apart.get(`${abs}.ts`);
          return file ? { path: file, namespace: "apart" } : undefined;
        });
        b.onLoad({ filter: /.*/, namespace: "apart" }, (args) => ({
          contents: `module.exports = require("node:module").createRequire(__filename)(${JSON.stringify(`./${args.path}`)});`,
          loader: "js",
        }));
      },
    },
  ];
  const { metafile } = await build({
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
    metafile: true,
    plugins: apart.size ? plugins : [],
    // esbuild names each module in a comment, relative to its working directory: the repo, whatever the cwd.
    absWorkingDir: REPO,
    define: { "import.meta.url": "__bundle_url" },
    banner: { js: `${shebang}const __bundle_url = require("node:url").pathToFileURL(__filename).href;` },
  });
  return metafile;
}

/** The npm packages a bundle includes. */
function packagesOf(meta: Metafile): Set<string> {
  const out = new Set<string>();
  for (const input of Object.keys(meta.inputs)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) out.add(m[1]!);
  }
  return out;
}
