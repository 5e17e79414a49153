import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { type HypervisorKind, HYPERVISORS as VMMS } from "../../runtime/sandboxer/hypervisor/names.ts";
import type { KernelProfile } from "../lib/stage.ts";
import { type Assignment, FragmentError, mergeFragments, readFragment, renderAssignment } from "./fragment.ts";
import {
  formatMismatches,
  formatUnknown,
  kconfigSymbols,
  parseDotConfig,
  unknownSymbols,
  verifyConfig,
} from "./verify.ts";

/** Repo-relative home of the fragments (every *.config applies) and the per-hypervisor profiles. */
export const CONFIG_DIR = "kernel-configs";
const FRAGMENTS = `${CONFIG_DIR}/fragments`;
const HYPERVISORS = `${CONFIG_DIR}/hypervisors`;

/** The guest agent is reachable only over vsock: a fragment set without these is refused. */
export const MANDATORY_SYMBOLS = ["VSOCKETS", "VSOCKETS_DIAG", "VIRTIO_VSOCKETS", "VIRTIO_VSOCKETS_COMMON"];

export interface ConfigRequest {
  /** Repo-relative fragment files in the order they were read. */
  files: string[];
  requested: Map<string, Assignment>;
}

/** Which fragment files apply: all of fragments/, then one profile per hypervisor (sorted, deduplicated). */
export async function fragmentFiles(repo: string, hypervisors: HypervisorKind[]): Promise<string[]> {
  const names = await readdir(path.join(repo, FRAGMENTS)).catch(() => {
    throw new FragmentError(`kernel config fragments directory ${path.join(repo, FRAGMENTS)} is missing`);
  });
  const fragments = names.filter((n) => n.endsWith(".config")).sort();
  if (fragments.length === 0) throw new FragmentError(`no *.config fragments in ${path.join(repo, FRAGMENTS)}`);
  if (hypervisors.length === 0) {
    throw new FragmentError(`no hypervisor selected: the kernel needs at least one of ${VMMS.join(", ")}`);
  }
  const profiles = [...new Set(hypervisors)].sort().map((h) => `${HYPERVISORS}/${h}.config`);
  return [...fragments.map((n) => `${FRAGMENTS}/${n}`), ...profiles];
}

/** Reads, parses and merges the fragments; rejects conflicts and a set that lacks the mandatory symbols. */
export async function loadRequest(repo: string, hypervisors: HypervisorKind[]): Promise<ConfigRequest> {
  const files = await fragmentFiles(repo, hypervisors);
  const parsed = await Promise.all(files.map((f) => readFragment(path.join(repo, f), f)));
  const requested = mergeFragments(parsed);
  const missing = MANDATORY_SYMBOLS.filter((s) => requested.get(s)?.value !== "y");
  if (missing.length > 0) {
    throw new FragmentError(
      `the kernel fragments must request ${missing.map((s) => `CONFIG_${s}=y`).join(", ")} (the guest agent talks over vsock); restore them in ${FRAGMENTS}/vsock.config`,
    );
  }
  return { files, requested };
}

export interface ConfigureArgs {
  /** Kernel source tree (in-tree build). */
  srcDir: string;
  profile: KernelProfile;
  requested: Map<string, Assignment>;
  /** Runs make in srcDir with these arguments. */
  make(args: string[]): Promise<unknown>;
  log(line: string): void;
}

/**
 * Produces srcDir/.config: micro = allnoconfig with the requests as KCONFIG_ALLCONFIG (every symbol not asked
 * for stays off), mini = x86_64_defconfig with the requests appended (later lines win in kconfig). Then
 * olddefconfig, then the value-exact check. Unknown symbols are rejected before kconfig runs, because kconfig
 * ignores them silently.
 */
export async function configure(args: ConfigureArgs): Promise<string> {
  const { srcDir, requested, log } = args;
  log("checking requested symbols against the source's Kconfig files");
  const unknown = unknownSymbols(requested.values(), await kconfigSymbols(srcDir));
  if (unknown.length > 0) throw new FragmentError(formatUnknown(unknown, srcDir));

  const lines = [...requested.values()].map((a) => renderAssignment(a.symbol, a.value));
  const request = path.join(srcDir, "kuasar.fragment");
  const dotConfig = path.join(srcDir, ".config");
  if (args.profile === "micro") {
    await writeFile(request, `${lines.join("\n")}\n`);
    log(`allnoconfig + ${requested.size} requested symbols`);
    await args.make(["allnoconfig", `KCONFIG_ALLCONFIG=${request}`]);
  } else {
    log(`x86_64_defconfig + ${requested.size} requested symbols`);
    await args.make(["x86_64_defconfig"]);
    // Drop the base's lines for requested symbols (as merge_config.sh does) so kconfig sees one value each.
    const base = (await readFile(dotConfig, "utf8"))
      .trimEnd()
      .split("\n")
      .filter((l) => !requested.has(/^(?:# )?CONFIG_([A-Za-z0-9_]+)[= ]/.exec(l)?.[1] ?? ""));
    await writeFile(dotConfig, `${[...base, ...lines].join("\n")}\n`);
  }
  log("olddefconfig");
  await args.make(["olddefconfig"]);

  log("verifying every requested symbol has its requested value");
  const text = await readFile(dotConfig, "utf8");
  const mismatches = verifyConfig(requested.values(), parseDotConfig(text));
  if (mismatches.length > 0) throw new FragmentError(formatMismatches(mismatches, dotConfig));
  return text;
}
