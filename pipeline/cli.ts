import { stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { HYPERVISORS, type HypervisorKind } from "../runtime/sandboxer/hypervisor/names.ts";
import { Cache, defaultCacheDir } from "./lib/cache.ts";
import { runStages, type StageOutcome } from "./lib/runner.ts";
import type { BuildOptions, KernelProfile } from "./lib/stage.ts";
import { allStages, defaultTargets } from "./stages/index.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const USAGE = `usage: kuasar-build [stage...|all] [options]
       kuasar-build install [--dest-dir DIR] [--hypervisor NAME]
       kuasar-build uninstall [--dest-dir DIR]

stages: ${allStages.map((s) => s.name).join(", ")}
options:
  --verbose               stream every tool's output
  --profile micro|mini    kernel base: allnoconfig+fragments (micro, default) or defconfig+fragments
  --hypervisor NAME       required-symbol profile(s) for the kernel / config for install (repeatable)
  --kernel-source SRC     Debian linux-source tarball (default), a local tarball or dir, or a URL
  --kernel-sha256 HEX     required with a URL source
  --kernel-patch FILE     a patch applied to the kernel source (repeatable, in order)
  --cache-dir DIR         build cache (default: $KUASAR_CACHE_DIR or $XDG_CACHE_HOME/kuasar-vmm)
  --bin-dir DIR           where artifacts are published (default: bin/)
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
    destDir: path.resolve(values["dest-dir"] ?? "/"),
    hypervisor: ((values.hypervisor ?? [])[0] ?? "qemu") as HypervisorKind,
  };
}

async function summary(outcomes: StageOutcome[], binDir: string, seconds: number): Promise<string> {
  const rows = [];
  for (const o of outcomes) {
    const st = allStages.find((s) => s.name === o.stage)!;
    const files = [];
    for (const name of Object.values(st.publish)) {
      const s = await stat(path.join(binDir, name)).catch(() => undefined);
      if (s) files.push(`${name} ${(s.size / 1048576).toFixed(1)} MiB`);
    }
    rows.push(
      `  ${o.stage.padEnd(10)} ${o.cached ? "cached" : "built "} ${o.seconds.toFixed(1).padStart(6)} s  ${files.join(", ")}`,
    );
  }
  return `${rows.join("\n")}\n  total ${seconds.toFixed(1)} s; artifacts in ${binDir}`;
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
  try {
    if (cli.command === "build") {
      const outcomes = await runStages({
        repo,
        stages: allStages,
        targets: cli.targets,
        options: cli.options,
        cache: new Cache(cli.cacheDir),
        binDir: cli.binDir,
      });
      console.log(await summary(outcomes, cli.binDir, (performance.now() - t0) / 1000));
      return 0;
    }
    const { installVmm, uninstallVmm, INSTALL_TARGETS } = await import("../installers/install-vmm.ts");
    if (cli.command === "install") {
      await runStages({
        repo,
        stages: allStages,
        targets: INSTALL_TARGETS,
        options: cli.options,
        cache: new Cache(cli.cacheDir),
        binDir: cli.binDir,
      });
      const written = await installVmm({ binDir: cli.binDir, destDir: cli.destDir, hypervisor: cli.hypervisor });
      console.log(`installed ${written.length} files under ${cli.destDir}`);
    } else {
      const removed = await uninstallVmm({ destDir: cli.destDir });
      console.log(`removed ${removed.length} files under ${cli.destDir}`);
    }
    return 0;
  } catch (err) {
    console.error(`\nkuasar-build: ${(err as Error).message}`);
    return 1;
  }
}
