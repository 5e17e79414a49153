#!/usr/bin/env node
// Entry point. The pipeline is TypeScript; it runs from an esbuild bundle kept under node_modules/.cache and
// rebuilt when any of its source files changes (checked by size and mtime), because loading it through tsx on
// every start costs more than a no-op build may take.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// One bundle per checkout: trees that share node_modules (a symlink, as the pipeline benchmark makes) would
// otherwise rebuild each other's bundle on every run.
const checkout = createHash("sha256").update(repo).digest("hex").slice(0, 12);
const cacheDir = path.join(repo, "node_modules/.cache/kuasar-build", checkout);
const bundle = path.join(cacheDir, "cli.mjs");
const inputsFile = path.join(cacheDir, "cli.inputs.json");

function fingerprint(file) {
  const st = statSync(file, { throwIfNoEntry: false });
  return st ? `${st.size}:${st.mtimeMs}` : "missing";
}

function upToDate() {
  if (!existsSync(bundle) || !existsSync(inputsFile)) return false;
  const inputs = JSON.parse(readFileSync(inputsFile, "utf8"));
  return Object.entries(inputs).every(([file, fp]) => fingerprint(path.join(repo, file)) === fp);
}

async function rebuild() {
  const esbuild = await import("esbuild");
  const fs = await import("node:fs/promises");
  // Each module keeps its own import.meta.url, so paths relative to a source file still resolve in the repo.
  const ownUrl = {
    name: "own-import-meta-url",
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, async (args) => ({
        contents: (await fs.readFile(args.path, "utf8")).replace(
          /(?<!["'`])\bimport\.meta\.url\b(?!["'`])/g,
          JSON.stringify(pathToFileURL(args.path).href),
        ),
        loader: "ts",
      }));
    },
  };
  const result = await esbuild.build({
    entryPoints: [path.join(repo, "pipeline/cli.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    outfile: bundle,
    metafile: true,
    logLevel: "error",
    plugins: [ownUrl],
  });
  const inputs = {};
  for (const file of Object.keys(result.metafile.inputs)) {
    const rel = path.relative(repo, path.resolve(file));
    inputs[rel] = fingerprint(path.join(repo, rel));
  }
  writeFileSync(inputsFile, JSON.stringify(inputs));
}

if (!upToDate()) await rebuild();
const { main } = await import(pathToFileURL(bundle).href);
process.exitCode = await main(process.argv.slice(2));
