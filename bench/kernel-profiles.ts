// Kernel profiles side by side: micro (allnoconfig + fragments, what bin/ holds) and mini (x86_64_defconfig +
// fragments). Builds mini through the CLI into the shared cache (about 20-40 minutes here the first time; later
// runs take it from the cache), then for each profile: build time, sizes, enabled symbols, and boot time to /init
// under QEMU TCG with the check initramfs of testkit/kernel-check.ts. Finally the VM tests run on the mini kernel
// (KUASAR_KERNEL_DIR): its boot checks and the daemon's full guest (agent over hybrid vsock, containers with runc).
// Run: node --import tsx bench/kernel-profiles.ts [--boots N]   (writes bench/results/kernel-profiles.json)

import { readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { artifact, requireArtifacts } from "../testkit/daemon.ts";
import { bootKernel, checkBootTools, checkInitrd, guestProblems } from "../testkit/kernel-check.ts";
import { cleanup, runBenchmark, scratchDir } from "./lib/cleanup.ts";
import { mdTable, mib, percentile, publish, type RunInfo, repo, runLine, startRun } from "./lib/report.ts";
import { collect } from "./lib/spawn.ts";

/** VM tests that boot the kernel under test: its own checks, and the daemon's whole guest with containers. */
const MINI_TESTS = ["test/vm/kernel-boot.test.ts", "test/vm/sandboxer.test.ts"];

interface Profile {
  profile: string;
  /** Cold build seconds as the kernel stage recorded them in its manifest. */
  buildSeconds: number;
  /** How this run got the build: built now, or taken from the cache (then buildSeconds is from that build). */
  how: "built in this run" | "from the cache";
  bzImageBytes: number;
  vmlinuxBytes: number;
  /** CONFIG_*=y lines in the final .config. */
  enabledSymbols: number;
  /** QEMU spawn until the check line on the console, bzImage on machine pc, each boot. */
  bootToInitMs: number[];
  bootToInitP50Ms: number;
  /** Whatever a boot found missing (vsock, cgroup controllers, power-off); empty when every boot was whole. */
  problems: string[];
}

interface Result {
  run: RunInfo;
  micro: Profile;
  mini: Profile;
  ratios: { buildSeconds: number; bzImage: number; bootToInitP50: number };
  miniTests: { files: string[]; pass: number; fail: number; seconds: number; failures: string[] };
}

async function buildMini(binDir: string): Promise<Profile["how"]> {
  console.log("  mini kernel: kuasar-build kernel --profile mini (20-40 min when not cached)");
  const r = await collect(
    process.execPath,
    ["pipeline/bin/kuasar-build.js", "kernel", "--profile", "mini", "--bin-dir", binDir],
    { cwd: repo },
  );
  if (r.code !== 0) throw new Error(`building the mini kernel failed:\n${r.out.slice(-4000)}`);
  return /^ {2}kernel\s+cached/m.test(r.out) ? "from the cache" : "built in this run";
}

async function measure(dir: string, how: Profile["how"], initrd: string, boots: number): Promise<Profile> {
  const manifest = JSON.parse(readFileSync(path.join(dir, "vmlinux.manifest.json"), "utf8")) as {
    profile: string;
    buildSeconds: number;
  };
  const config = readFileSync(path.join(dir, "vmlinux.config"), "utf8");
  const bootToInitMs: number[] = [];
  const problems = new Set<string>();
  for (let i = 0; i < boots; i++) {
    const boot = await bootKernel(path.join(dir, "bzImage"), "pc", initrd);
    for (const p of guestProblems(boot.out)) problems.add(p.split("\n")[0]!);
    if (boot.initMs !== undefined) bootToInitMs.push(Math.round(boot.initMs));
  }
  console.log(`  ${manifest.profile}: boots to /init ${bootToInitMs.join(", ")} ms`);
  return {
    profile: manifest.profile,
    buildSeconds: manifest.buildSeconds,
    how,
    bzImageBytes: (await stat(path.join(dir, "bzImage"))).size,
    vmlinuxBytes: (await stat(path.join(dir, "vmlinux.bin"))).size,
    enabledSymbols: config.split("\n").filter((l) => /^CONFIG_\w+=y$/.test(l)).length,
    bootToInitMs,
    bootToInitP50Ms: bootToInitMs.length ? percentile(bootToInitMs, 50) : Number.NaN,
    problems: [...problems],
  };
}

async function miniTests(dir: string): Promise<Result["miniTests"]> {
  console.log(`  VM tests on the mini kernel: ${MINI_TESTS.join(" ")}`);
  const t0 = performance.now();
  const r = await collect(
    process.execPath,
    ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=tap", ...MINI_TESTS],
    { cwd: repo, env: { ...process.env, KUASAR_KERNEL_DIR: dir } },
  );
  const count = (k: string) => Number(new RegExp(`^# ${k} (\\d+)`, "m").exec(r.out)?.[1] ?? 0);
  const failures = [...r.out.matchAll(/^\s*not ok \d+ - (.+)$/gm)].map((m) => m[1]!);
  return {
    files: MINI_TESTS,
    pass: count("pass"),
    fail: count("fail") + (r.code !== 0 && count("fail") === 0 ? 1 : 0),
    seconds: Math.round((performance.now() - t0) / 1000),
    failures,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { boots: { type: "string", default: "3" } } });
  const boots = Number(values.boots);
  if (!Number.isInteger(boots) || boots < 1) throw new Error(`--boots must be a positive integer, got ${values.boots}`);
  requireArtifacts(["vmlinux.bin", "bzImage", "vmlinux.manifest.json", "kuasar.img"]);
  await checkBootTools();
  const runInfo = startRun();
  const dir = await scratchDir("bench-kernel-profiles-");
  try {
    const miniDir = path.join(dir, "mini");
    const how = await buildMini(miniDir);
    const initrd = await checkInitrd(dir);
    const micro = await measure(path.dirname(artifact("bzImage")), "from the cache", initrd, boots);
    if (micro.profile !== "micro")
      throw new Error(`bin/ holds a ${micro.profile} kernel; build micro: make bin/vmlinux.bin`);
    const mini = await measure(miniDir, how, initrd, boots);
    const tests = await miniTests(miniDir);
    const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
    const result: Result = {
      run: runInfo.finish(),
      micro,
      mini,
      ratios: {
        buildSeconds: ratio(mini.buildSeconds, micro.buildSeconds),
        bzImage: ratio(mini.bzImageBytes, micro.bzImageBytes),
        bootToInitP50: ratio(mini.bootToInitP50Ms, micro.bootToInitP50Ms),
      },
      miniTests: tests,
    };
    const out = publish("kernel-profiles", result, markdown(result));
    console.table(rows(result).map(([what, a, b, r]) => ({ what, micro: a, mini: b, "mini / micro": r })));
    console.log(
      `VM tests on mini: ${tests.pass} passed, ${tests.fail} failed${tests.failures.length ? `: ${tests.failures.join("; ")}` : ""}`,
    );
    console.log(`\nwrote ${out} and BENCHMARKS.md`);
  } finally {
    await cleanup();
  }
}

function rows(r: Result): Array<[string, string | number, string | number, string | number]> {
  const build = (p: Profile) => `${p.buildSeconds} (${p.how})`;
  return [
    ["cold build s (kernel stage)", build(r.micro), build(r.mini), r.ratios.buildSeconds],
    ["bzImage MiB", mib(r.micro.bzImageBytes), mib(r.mini.bzImageBytes), r.ratios.bzImage],
    ["vmlinux.bin MiB", mib(r.micro.vmlinuxBytes), mib(r.mini.vmlinuxBytes), ""],
    ["CONFIG_*=y", r.micro.enabledSymbols, r.mini.enabledSymbols, ""],
    ["QEMU start to /init p50 ms", r.micro.bootToInitP50Ms, r.mini.bootToInitP50Ms, r.ratios.bootToInitP50],
    ["boot problems", r.micro.problems.join("; ") || "none", r.mini.problems.join("; ") || "none", ""],
  ];
}

function markdown(r: Result): string {
  const t = r.miniTests;
  return [
    "## Kernel profiles: micro vs mini",
    "",
    runLine(r.run),
    "micro is `bin/` (allnoconfig + kernel-configs/); mini is x86_64_defconfig + the same fragments, built by " +
      "`kuasar-build kernel --profile mini`. Build times are the kernel stage's own, from each build's manifest " +
      "(a cached build keeps the time it took when it was made). Boots: bzImage on QEMU machine pc, TCG, 2 vCPUs, " +
      `512 MiB, with the check initramfs of \`testkit/kernel-check.ts\`; ${r.micro.bootToInitMs.length} boots each.`,
    "",
    mdTable(["", "micro", "mini", "mini / micro"], rows(r)),
    "",
    `VM tests on the mini kernel (\`KUASAR_KERNEL_DIR\`, ${t.files.map((f) => `\`${f}\``).join(", ")}): ` +
      `**${t.pass} passed, ${t.fail} failed** in ${t.seconds} s${t.failures.length ? ` (failed: ${t.failures.join("; ")})` : ""}.`,
  ].join("\n");
}

await runBenchmark("kernel-profiles", main);
