import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { INSTALL_TARGETS, installVmm, uninstallVmm } from "../installers/install-vmm.ts";
import { HYPERVISORS, type HypervisorKind } from "../runtime/sandboxer/hypervisor/names.ts";
import { Cache, defaultCacheDir } from "./lib/cache.ts";
import { runStages, type StageOutcome } from "./lib/runner.ts";
import type { BuildOptions, KernelProfile } from "./lib/stage.ts";
import { StageError } from "./lib/stage-error.ts";
import { allStages, defaultTargets } from "./stages/index.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const USAGE = `usage: kuasar-build [stage...|all] [options]
       kuasar-build dist [options]         the release bundle, its SBOM and SHA256SUMS in --dist-dir
       kuasar-build install [--dest-dir DIR] [--hypervisor NAME]
       kuasar-build uninstall [--dest-dir DIR]

stages: ${allStages.map((s) => s.name).join(", ")}
options:
  --verbose               stream every tool's output
  --ci                    plain timestamped progress lines and a JSON summary as the last line (also when CI=true
                          or stdout is not a terminal: then without the last line)
  --summary FILE          where the JSON summary goes (default: build/summary.json)
  --profile micro|mini    kernel base: allnoconfig+fragments (micro, default) or defconfig+fragments
  --hypervisor NAME       required-symbol profile(s) for the kernel / config for install (repeatable)
  --kernel-source SRC     Debian linux-source tarball (default), a local tarball or dir, or a URL
  --kernel-sha256 HEX     required with a URL source
  --kernel-patch FILE     a patch applied to the kernel source after kernel-configs/patches/ (repeatable, in order)
  --cache-dir DIR         build cache (default: $KUASAR_CACHE_DIR or $XDG_CACHE_HOME/kuasar-vmm)
  --bin-dir DIR           where artifacts are published (default: bin/)
  --dist-dir DIR          where the release bundle is published (default: dist/)
  --dest-dir DIR          install root (default: /)`;

export function parseCli(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      verbose: { type: "boolean", short: "v", default: false },
      profile: { type: "string", default: "micro" },
      hypervisor: { type: "string", multiple: true },
      "kernel-source": { type: "string" },
      "kernel-sha256": { type: "string" },
      "kernel-patch": { type: "string", multiple: true },
      "cache-dir": { type: "string" },
      "bin-dir": { type: "string" },
      "dist-dir": { type: "string" },
      ci: { type: "boolean", default: false },
      summary: { type: "string" },
      "dest-dir": { type: "string", default: "/" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.profile !== "micro" && values.profile !== "mini") {
    throw new Error(`--profile must be 'micro' or 'mini', got '${values.profile}'`);
  }
  for (const h of values.hypervisor ?? []) {
    if (!(HYPERVISORS as readonly string[]).includes(h)) {
      throw new Error(`--hypervisor must be one of ${HYPERVISORS.join(", ")}, got '${h}'`);
    }
  }
  const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? 1700000000);
  if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`SOURCE_DATE_EPOCH must be a whole number of seconds`);
  const options: BuildOptions = {
    profile: values.profile as KernelProfile,
    hypervisors: (values.hypervisor as HypervisorKind[] | undefined) ?? [...HYPERVISORS],
    kernelSource: values["kernel-source"],
    kernelSha256: values["kernel-sha256"],
    kernelPatches: (values["kernel-patch"] ?? []).map((p) => path.resolve(p)),
    sourceDateEpoch: epoch,
    verbose: values.verbose ?? false,
  };
  return {
    command: positionals[0] === "install" || positionals[0] === "uninstall" ? positionals[0] : "build",
    targets: positionals.length === 0 || positionals.includes("all") ? defaultTargets : positionals,
    options,
    help: values.help ?? false,
    cacheDir: path.resolve(values["cache-dir"] ?? defaultCacheDir()),
    binDir: path.resolve(values["bin-dir"] ?? path.join(repo, "bin")),
    distDir: path.resolve(values["dist-dir"] ?? path.join(repo, "dist")),
    ci: (values.ci ?? false) || process.env.CI === "true",
    summaryFile: path.resolve(values.summary ?? path.join(repo, "build", "summary.json")),
    destDir: path.resolve(values["dest-dir"] ?? "/"),
    hypervisor: ((values.hypervisor ?? [])[0] ?? "qemu") as HypervisorKind,
  };
}

/** The table printed at the end; bench/pipeline.ts reads its "  <stage> cached|built <s> s" rows. */
function summaryTable(outcomes: StageOutcome[], seconds: number, where: string): string {
  const rows = outcomes.map((o) => {
    const files = o.published.map((f) => `${f.name} ${(f.size / 1048576).toFixed(1)} MiB`);
    return `  ${o.stage.padEnd(10)} ${o.cached ? "cached" : "built "} ${o.seconds.toFixed(1).padStart(6)} s  ${files.join(", ")}`;
  });
  return `${rows.join("\n")}\n  total ${seconds.toFixed(1)} s; artifacts in ${where}`;
}

/** What a CI job reads after a build: per stage, cached or built, seconds, and each artifact's path, size and digest. */
export interface BuildSummary {
  ok: boolean;
  command: string;
  targets: string[];
  seconds: number;
  /** The stage that failed, and why (ok: false). */
  failed?: { stage: string; error: string };
  stages: {
    stage: string;
    status: "cached" | "built";
    seconds: number;
    artifacts: { name: string; path: string; size: number; sha256: string }[];
  }[];
}

export function buildSummary(
  outcomes: StageOutcome[],
  opts: { command: string; targets: string[]; seconds: number; error?: unknown },
): BuildSummary {
  const round = (n: number) => Math.round(n * 10) / 10;
  const err = opts.error;
  return {
    ok: err === undefined,
    command: opts.command,
    targets: opts.targets,
    seconds: round(opts.seconds),
    ...(err === undefined
      ? {}
      : {
          failed: {
            stage: err instanceof StageError ? err.stage : "(none)",
            error: err instanceof StageError ? err.detail : (err as Error).message,
          },
        }),
    stages: outcomes.map((o) => ({
      stage: o.stage,
      status: o.cached ? "cached" : "built",
      seconds: round(o.seconds),
      artifacts: o.published.map((f) => ({ name: f.name, path: f.file, size: f.size, sha256: f.sha256 })),
    })),
  };
}

async function writeSummary(file: string, summary: BuildSummary): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(summary, null, 2)}\n`);
}

export async function main(argv: string[]): Promise<number> {
  let cli: ReturnType<typeof parseCli>;
  try {
    cli = parseCli(argv);
  } catch (err) {
    console.error(`kuasar-build: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (cli.help) {
    console.log(USAGE);
    return 0;
  }
  const t0 = performance.now();
  const outcomes: StageOutcome[] = [];
  const run = {
    repo,
    stages: allStages,
    options: cli.options,
    cache: new Cache(cli.cacheDir),
    binDir: cli.binDir,
    distDir: cli.distDir,
    plain: cli.ci,
    onOutcome: (o: StageOutcome) => outcomes.push(o),
  };
  const targets = cli.command === "build" ? cli.targets : cli.command === "install" ? INSTALL_TARGETS : [];
  const finish = async (error?: unknown) => {
    const seconds = (performance.now() - t0) / 1000;
    const summary = buildSummary(outcomes, { command: cli.command, targets, seconds, error });
    await writeSummary(cli.summaryFile, summary).catch((err: Error) => {
      console.error(`kuasar-build: cannot write the summary ${cli.summaryFile}: ${err.message}`);
    });
    if (error === undefined && outcomes.length > 0) {
      const where = outcomes.some((o) => allStages.find((s) => s.name === o.stage)?.publishTo === "dist")
        ? `${cli.binDir} and ${cli.distDir}`
        : cli.binDir;
      console.log(summaryTable(outcomes, seconds, where));
    }
    if (cli.ci) console.log(`summary: ${JSON.stringify(summary)}`);
  };
  try {
    if (cli.command === "build") {
      await runStages({ ...run, targets });
    } else if (cli.command === "install") {
      await runStages({ ...run, targets });
      const written = await installVmm({ binDir: cli.binDir, destDir: cli.destDir, hypervisor: cli.hypervisor });
      console.log(`installed ${written.length} files under ${cli.destDir}`);
    } else {
      const removed = await uninstallVmm({ destDir: cli.destDir });
      console.log(`removed ${removed.length} files under ${cli.destDir}`);
    }
    await finish();
    return 0;
  } catch (err) {
    const what = err instanceof StageError ? `stage '${err.stage}' failed: ${err.detail}` : (err as Error).message;
    console.error(`\nkuasar-build: ${what}`);
    await finish(err);
    return 1;
  }
}
