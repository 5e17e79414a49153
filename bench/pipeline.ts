// Pipeline: cold and warm times per stage, artifact sizes, and reproducibility. Builds run the CLI
// (pipeline/bin/kuasar-build.js) on a clean export of the committed tree (git archive HEAD, so edits in the
// shared working tree neither leak in nor change between builds), into temporary cache and bin dirs (--cache-dir,
// --bin-dir): bin/ and the shared cache are never written. Cold = a fresh cache dir; warm = the same run again.
// Two cold builds must give the same sha256 for every file of every stage (image and initrd above all).
// The kernel's cold build takes 13 minutes here on idle cores (up to 35 on busy ones), so it runs only with --cold-kernel (its sha256 is then compared
// with the shared cache's build of the same key, and it is followed by two config-only rebuilds from the kept build
// tree, the second of which must reproduce the cold build); without it the kernel's warm time is taken from the shared cache.
// The release bundle (kuasar-build dist) is then built on top of each cold build's cache, the kernel entry copied in
// from where it is (the shared cache, or the --cold-kernel build): its size, cold and warm times, and whether the two
// cold caches give the same bundle digest.
// Run: node --import tsx bench/pipeline.ts [--cold-kernel]   (writes bench/results/pipeline.json)
//      --report-only re-renders BENCHMARKS.md's section from the last results without building.

import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cp, mkdir, readdir, rm, stat, symlink } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { defaultCacheDir } from "../pipeline/lib/cache.ts";
import { hashFile } from "../pipeline/lib/hash.ts";
import { resolveOrder } from "../pipeline/lib/runner.ts";
import { allStages, defaultTargets } from "../pipeline/stages/index.ts";
import { cleanup, runBenchmark, scratchDir } from "./lib/cleanup.ts";
import {
  goal,
  mdTable,
  mib,
  publish,
  type RunInfo,
  repo,
  resultsDir,
  runLine,
  startRun,
  updateBenchmarksMd,
  verdict,
} from "./lib/report.ts";
import { collect } from "./lib/spawn.ts";

const STAGES = new Map(allStages.map((s) => [s.name, s]));
/** `all` without what needs the kernel; intermediates (rootfs) come along as dependencies. */
const NON_KERNEL_TARGETS = defaultTargets.filter((t) => !resolveOrder(STAGES, [t]).some((s) => s.name === "kernel"));
const REPRO_STAGES = resolveOrder(STAGES, NON_KERNEL_TARGETS).map((s) => s.name);
/** Issue #2's goals, on 2 cores: the kernel's cold build and a no-op rebuild of everything. */
const KERNEL_COLD_GOAL_S = 8 * 60;
const NO_OP_GOAL_S = 2;

interface StageTime {
  stage: string;
  cached: boolean;
  seconds: number;
}

interface BuildRun {
  /** The CLI's wall time, tsx start-up and key planning included. */
  wallSeconds: number;
  stages: StageTime[];
}

interface Entry {
  key: string;
  files: Record<string, { size: number; sha256: string }>;
}

interface Repro {
  stage: string;
  sameKey: boolean;
  /** Files whose sha256 differs between the two builds (empty: reproducible). */
  differing: string[];
  files: number;
}

/** The release bundle built on each cold build's cache: cold (deps cached), warm, and the second cache's cold. */
type BundleRun =
  | { name: string; bytes: number; cold: BuildRun; warm: BuildRun; second: BuildRun; repro: Repro }
  | { note: string };

interface Result {
  run: RunInfo;
  coldKernel: boolean;
  cold: BuildRun;
  warm: BuildRun;
  coldSecond: BuildRun;
  /** Without --cold-kernel: the kernel stage against the shared cache (undefined when it held no build for this tree). */
  kernelWarm?: BuildRun;
  kernelNote: string;
  sizes: Record<string, number>;
  reproducible: Repro[];
  kernelRepro?: { vmlinuxSame: boolean; bzImageSame: boolean; against: string } | { note: string };
  /** With --cold-kernel: config-only rebuilds from the kept build tree, and whether they match the cold build. */
  kernelIncremental?: { changeSeconds: number; backSeconds: number; sameAsCold: boolean };
  /** Absent in results written before the bundle existed. */
  bundle?: BundleRun;
}

/** Runs the CLI of the exported tree; `abortOn` kills it when its output matches (a build we must not start). */
async function build(
  src: string,
  targets: string[],
  cacheDir: string,
  binDir: string,
  abortOn?: RegExp,
): Promise<BuildRun | undefined> {
  const t0 = performance.now();
  // dist/ beside bin/, so nothing lands in the exported tree.
  const distDir = path.join(path.dirname(binDir), `dist-${path.basename(binDir)}`);
  const r = await collect(
    process.execPath,
    [
      path.join(src, "pipeline/bin/kuasar-build.js"),
      ...targets,
      "--cache-dir",
      cacheDir,
      "--bin-dir",
      binDir,
      "--dist-dir",
      distDir,
      "--summary",
      path.join(path.dirname(binDir), "summary.json"),
    ],
    { cwd: src, ...(abortOn ? { abortOn } : {}) },
  );
  if (r.aborted) return undefined;
  if (r.code !== 0) throw new Error(`kuasar-build ${targets.join(" ")} exited with ${r.code}:\n${r.out.slice(-4000)}`);
  const stages = [...r.out.matchAll(/^ {2}(\S+)\s+(cached|built)\s+([\d.]+) s/gm)].map((m) => ({
    stage: m[1]!,
    cached: m[2] === "cached",
    seconds: Number(m[3]),
  }));
  return { wallSeconds: Math.round((performance.now() - t0) / 100) / 10, stages };
}

/** The one cache entry of a stage in a cache dir (a fresh cache holds exactly one per stage). */
function entryOf(cacheDir: string, stage: string, key?: string): Entry | undefined {
  const dir = path.join(cacheDir, stage);
  const keys = key ? [key] : existsSync(dir) ? readdirSync(dir).filter((k) => !k.startsWith(".")) : [];
  if (keys.length !== 1 || !existsSync(path.join(dir, keys[0]!, "entry.json"))) return undefined;
  return JSON.parse(readFileSync(path.join(dir, keys[0]!, "entry.json"), "utf8")) as Entry;
}

function compare(stage: string, a: Entry | undefined, b: Entry | undefined): Repro {
  if (!a || !b)
    throw new Error(`stage ${stage}: no single cache entry in ${a ? "the second" : "the first"} cold build`);
  const names = [...new Set([...Object.keys(a.files), ...Object.keys(b.files)])].sort();
  return {
    stage,
    sameKey: a.key === b.key,
    differing: names.filter((n) => a.files[n]?.sha256 !== b.files[n]?.sha256),
    files: names.length,
  };
}

/**
 * The kept build tree at work: the kernel for QEMU alone (a config change), then the default config again with its
 * cold entry removed, which has to come out bit-identical to the cold build.
 */
async function incrementalKernel(
  src: string,
  cache: string,
  binDir: string,
  cold: Entry,
): Promise<Result["kernelIncremental"]> {
  const kernelSeconds = (b: BuildRun) => b.stages.find((x) => x.stage === "kernel")?.seconds ?? Number.NaN;
  console.log("  kernel for QEMU alone (config change, kept tree)");
  const changed = (await build(src, ["kernel", "--hypervisor", "qemu"], cache, binDir))!;
  console.log(`    ${kernelSeconds(changed)} s; the default config again, its cold entry removed`);
  await rm(path.join(cache, "kernel", cold.key), { recursive: true, force: true });
  const back = (await build(src, ["kernel"], cache, binDir))!;
  const again = entryOf(cache, "kernel", cold.key);
  console.log(`    ${kernelSeconds(back)} s`);
  return {
    changeSeconds: kernelSeconds(changed),
    backSeconds: kernelSeconds(back),
    sameAsCold: ["vmlinux.bin", "bzImage"].every((f) => again?.files[f]?.sha256 === cold.files[f]?.sha256),
  };
}

/**
 * The release bundle on top of both cold caches. It needs the kernel: every kernel entry of the cache that holds
 * this tree's kernel (the one whose vmlinux.bin is kernelBin's) is copied into each cache, so the CLI finds its key.
 */
async function bundleRun(src: string, dir: string, kernelFrom: string, kernelBin: string): Promise<BundleRun> {
  const vmlinux = await hashFile(path.join(kernelBin, "vmlinux.bin")).catch(() => undefined);
  const kernels = existsSync(path.join(kernelFrom, "kernel")) ? await readdir(path.join(kernelFrom, "kernel")) : [];
  const matching = kernels.filter(
    (k) => vmlinux && entryOf(kernelFrom, "kernel", k)?.files["vmlinux.bin"]?.sha256 === vmlinux,
  );
  if (matching.length === 0) return { note: `no kernel for this tree in ${kernelFrom}: the bundle was not built` };
  const [c1, c2] = [path.join(dir, "cache-1"), path.join(dir, "cache-2")];
  for (const cache of [c1, c2]) {
    for (const k of matching) {
      const to = path.join(cache, "kernel", k);
      if (!existsSync(to)) await cp(path.join(kernelFrom, "kernel", k), to, { recursive: true });
    }
  }
  console.log("  release bundle (dist) on cache 1: cold, warm; on cache 2: cold");
  const cold = (await build(src, ["dist"], c1, path.join(dir, "bin-1")))!;
  const warm = (await build(src, ["dist"], c1, path.join(dir, "bin-1")))!;
  const second = (await build(src, ["dist"], c2, path.join(dir, "bin-2")))!;
  const entry = entryOf(c1, "dist");
  const [name, file] = Object.entries(entry?.files ?? {}).find(([n]) => n.endsWith(".tar.zst")) ?? ["?", { size: 0 }];
  const distSeconds = (b: BuildRun) => b.stages.find((x) => x.stage === "dist")?.seconds ?? Number.NaN;
  console.log(`    ${name}: ${mib(file.size)} MiB; cold ${distSeconds(cold)} s, warm ${warm.wallSeconds} s (CLI)`);
  return { name, bytes: file.size, cold, warm, second, repro: compare("dist", entry, entryOf(c2, "dist")) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { "cold-kernel": { type: "boolean", default: false }, "report-only": { type: "boolean", default: false } },
  });
  if (values["report-only"]) {
    // re-renders the report from the last results, e.g. after the report's wording changed
    const r = JSON.parse(readFileSync(path.join(resultsDir, "pipeline.json"), "utf8")) as Result;
    updateBenchmarksMd("pipeline", markdown(r));
    printTables(r);
    return;
  }
  const coldKernel = values["cold-kernel"] ?? false;
  const run = startRun();
  const dir = await scratchDir("bench-pipeline-");
  const src = path.join(dir, "src");
  await mkdir(src);
  const exported = spawnSync("sh", ["-c", `git -C "${repo}" archive --format=tar HEAD | tar -x -C "${src}"`], {
    encoding: "utf8",
  });
  if (exported.status !== 0) throw new Error(`cannot export HEAD: ${exported.stderr}`);
  await symlink(path.join(repo, "node_modules"), path.join(src, "node_modules"));
  const targets = coldKernel ? ["kernel", ...NON_KERNEL_TARGETS] : NON_KERNEL_TARGETS;
  const c1 = path.join(dir, "cache-1");
  const c2 = path.join(dir, "cache-2");
  try {
    console.log(`  cold build 1 (${targets.join(", ")})`);
    const cold = (await build(src, targets, c1, path.join(dir, "bin-1")))!;
    console.log(`    ${cold.wallSeconds} s; warm build`);
    const warm = (await build(src, targets, c1, path.join(dir, "bin-1")))!;
    console.log(`    ${warm.wallSeconds} s; cold build 2 (${NON_KERNEL_TARGETS.join(", ")})`);
    const coldSecond = (await build(src, NON_KERNEL_TARGETS, c2, path.join(dir, "bin-2")))!;
    console.log(`    ${coldSecond.wallSeconds} s`);

    const reproducible = REPRO_STAGES.map((s) => compare(s, entryOf(c1, s), entryOf(c2, s)));
    const shared = defaultCacheDir();
    let kernelWarm: BuildRun | undefined;
    let kernelNote: string;
    let kernelRepro: Result["kernelRepro"];
    let kernelBin: string;
    let kernelIncremental: Result["kernelIncremental"];
    if (coldKernel) {
      const mine = entryOf(c1, "kernel")!;
      kernelIncremental = await incrementalKernel(src, c1, path.join(dir, "bin-i"), mine);
      const theirs = entryOf(shared, "kernel", mine.key);
      kernelRepro = theirs
        ? {
            vmlinuxSame: mine.files["vmlinux.bin"]?.sha256 === theirs.files["vmlinux.bin"]?.sha256,
            bzImageSame: mine.files.bzImage?.sha256 === theirs.files.bzImage?.sha256,
            against: `${shared}/kernel/${mine.key.slice(0, 12)}…`,
          }
        : { note: `the shared cache ${shared} has no kernel build of key ${mine.key.slice(0, 12)}… to compare with` };
      kernelNote = "kernel cold build run (--cold-kernel)";
      kernelBin = path.join(dir, "bin-1");
    } else {
      kernelBin = path.join(dir, "bin-k");
      kernelWarm = await build(src, ["kernel"], shared, kernelBin, /building/);
      kernelNote = kernelWarm
        ? "kernel cold build not run (use --cold-kernel); its warm time is from the shared cache"
        : `kernel cold build not run (use --cold-kernel); the shared cache ${shared} holds no kernel for this tree, so no kernel figures`;
      kernelRepro = { note: "not checked: kernel cold build not run (use --cold-kernel)" };
    }

    const sizes: Record<string, number> = {};
    for (const [name, file] of [
      ["vmlinux.bin", path.join(kernelBin, "vmlinux.bin")],
      ["bzImage", path.join(kernelBin, "bzImage")],
      ["kuasar.img", path.join(dir, "bin-1/kuasar.img")],
      ["kuasar.initrd", path.join(dir, "bin-1/kuasar.initrd")],
      ["vmm-task", path.join(dir, "bin-1/vmm-task")],
      ["vmm-sandboxer", path.join(dir, "bin-1/vmm-sandboxer")],
    ] as const) {
      const st = await stat(file).catch(() => undefined);
      if (st) sizes[name] = st.size;
    }
    const rootfs = entryOf(c1, "rootfs");
    const archive = rootfs && Object.entries(rootfs.files).find(([n]) => n.endsWith(".gz"));
    if (archive) sizes[`rootfs ${archive[0]}`] = archive[1].size;
    if (kernelWarm) {
      // what the shared cache's kernel is, to show which build the sizes belong to
      for (const f of ["vmlinux.bin", "bzImage"])
        console.log(`  ${f} sha256 ${await hashFile(path.join(kernelBin, f))}`);
    }

    // With --cold-kernel the kernel is this run's own (cache 1); otherwise the shared cache's.
    const bundle = await bundleRun(src, dir, coldKernel ? c1 : shared, kernelBin);
    if ("bytes" in bundle) sizes[bundle.name] = bundle.bytes;
    else console.log(`  ${bundle.note}`);

    const result: Result = {
      run: run.finish(),
      coldKernel,
      cold,
      warm,
      coldSecond,
      ...(kernelWarm ? { kernelWarm } : {}),
      kernelNote,
      ...(kernelIncremental ? { kernelIncremental } : {}),
      sizes,
      reproducible,
      kernelRepro,
      bundle,
    };
    const out = publish("pipeline", result, markdown(result));
    printTables(result);
    console.log(`\nwrote ${out} and BENCHMARKS.md`);
  } finally {
    await cleanup();
  }
}

function stageRows(r: Result): Array<[string, string, string, string]> {
  const t = (b: BuildRun | undefined, s: string) => {
    const x = b?.stages.find((y) => y.stage === s);
    if (x) return `${x.seconds.toFixed(1)}${x.cached ? "" : " (built)"}`;
    // the runner skips an intermediate whose dependants are all cached
    return b?.stages.length ? "not needed" : "";
  };
  const names = [...new Set([...r.cold.stages, ...(r.kernelWarm?.stages ?? [])].map((s) => s.stage))];
  const rows: Array<[string, string, string, string]> = names.map((s) => [
    s,
    s === "kernel" && !r.coldKernel ? "not run (use --cold-kernel)" : t(r.cold, s),
    s === "kernel" && r.kernelWarm ? t(r.kernelWarm, s) : t(r.warm, s),
    s === "kernel" ? "not run (the second build skips the kernel)" : t(r.coldSecond, s),
  ]);
  rows.push(["whole CLI run (wall)", `${r.cold.wallSeconds}`, `${r.warm.wallSeconds}`, `${r.coldSecond.wallSeconds}`]);
  return rows;
}

const STAGE_HEADERS = ["stage", "cold s", "warm s", "second cold s"];

function reproRows(r: Result): Array<[string, string]> {
  const rows: Array<[string, string]> = r.reproducible.map((x) => [
    x.stage,
    x.differing.length === 0
      ? `same sha256 for all ${x.files} files${x.sameKey ? "" : " (different keys!)"}`
      : `DIFFERENT: ${x.differing.join(", ")}${x.sameKey ? "" : " (different keys: the inputs changed)"}`,
  ]);
  const b = r.bundle;
  if (b && "repro" in b) {
    rows.push([
      "dist",
      b.repro.differing.length === 0
        ? `same sha256 for the bundle, its SBOM and SHA256SUMS (${b.repro.files} files)`
        : `DIFFERENT: ${b.repro.differing.join(", ")}`,
    ]);
  }
  const k = r.kernelRepro;
  if (k && "note" in k) rows.push(["kernel", k.note]);
  else if (k) {
    rows.push([
      "kernel",
      `vmlinux.bin ${k.vmlinuxSame ? "same" : "DIFFERENT"}, bzImage ${k.bzImageSame ? "same" : "DIFFERENT"} sha256 vs ${k.against}`,
    ]);
  }
  return rows;
}

/** The goals as measured: the kernel's only with --cold-kernel. */
function goalLines(r: Result): string[] {
  const lines = [
    `no-op rebuild (warm, whole CLI run): ${verdict(goal(r.warm.wallSeconds, NO_OP_GOAL_S, "max"), " s")}`,
  ];
  const kernel = r.coldKernel ? r.cold.stages.find((s) => s.stage === "kernel") : undefined;
  if (kernel) lines.push(`kernel cold build: ${verdict(goal(kernel.seconds, KERNEL_COLD_GOAL_S, "max"), " s")}`);
  return lines;
}

function incrementalLine(r: Result): string | undefined {
  const k = r.kernelIncremental;
  if (!k) return undefined;
  return (
    `kernel after a config change, from the kept build tree: QEMU-only ${k.changeSeconds} s, back to the default ` +
    `${k.backSeconds} s (cold ${r.cold.stages.find((s) => s.stage === "kernel")?.seconds} s); the rebuilt default ` +
    `is ${k.sameAsCold ? "bit-identical to" : "DIFFERENT from"} the cold build`
  );
}

/** The release bundle's line: its size and the dist stage's cold and warm times. */
function bundleLine(r: Result): string | undefined {
  const b = r.bundle;
  if (!b) return undefined;
  if ("note" in b) return `release bundle: ${b.note}`;
  const s = (x: BuildRun) => x.stages.find((y) => y.stage === "dist")?.seconds;
  return (
    `release bundle ${b.name}: ${mib(b.bytes)} MiB; the dist stage cold ${s(b.cold)} s (its dependencies cached), ` +
    `second cold ${s(b.second)} s, warm (whole CLI run) ${b.warm.wallSeconds} s`
  );
}

function printTables(r: Result): void {
  console.log("\nstage times (s; the CLI's own per-stage figures)");
  console.table(stageRows(r).map((row) => Object.fromEntries(STAGE_HEADERS.map((h, i) => [h, row[i]]))));
  console.table(Object.entries(r.sizes).map(([artifact, bytes]) => ({ artifact, MiB: mib(bytes), bytes })));
  console.log(`${r.run.cpus} CPUs, load average ${r.run.loadavgStart.join(" ")} -> ${r.run.loadavgEnd.join(" ")}`);
  console.log(r.kernelNote);
  for (const g of goalLines(r)) console.log(g);
  const inc = incrementalLine(r);
  if (inc) console.log(inc);
  const bl = bundleLine(r);
  if (bl) console.log(bl);
  console.log("reproducibility (two cold builds):");
  for (const [stage, v] of reproRows(r)) console.log(`  ${stage}: ${v}`);
}

function markdown(r: Result): string {
  return [
    "## Pipeline: cold and warm builds, sizes, reproducibility",
    "",
    runLine(r.run),
    "The CLI runs on a clean export of the commit (`git archive`), into fresh temporary `--cache-dir` and `--bin-dir`. " +
      "Cold: an empty cache; warm: the same command again; second cold: another empty cache, for the " +
      `reproducibility check. **${r.kernelNote}.**`,
    "",
    mdTable(STAGE_HEADERS, stageRows(r)),
    "",
    mdTable(
      ["artifact", "MiB", "bytes"],
      Object.entries(r.sizes).map(([a, b]) => [a, mib(b), b]),
    ),
    "",
    ...goalLines(r).map((g) => `- ${g}`),
    "",
    ...(incrementalLine(r) ? [`${incrementalLine(r)}.`, ""] : []),
    ...(bundleLine(r) ? [`${bundleLine(r)}.`, ""] : []),
    "Reproducibility (every file each stage stores, by sha256, between the two cold builds):",
    "",
    mdTable(["stage", "result"], reproRows(r)),
  ].join("\n");
}

await runBenchmark("pipeline", main);
