import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { HypervisorKind } from "../../runtime/sandboxer/hypervisor/names.ts";
import { Cache } from "./cache.ts";
import { hashFile, hashTree, sha256 } from "./hash.ts";
import type { ToolShell } from "./shell.ts";
import { toolVersion } from "./tools.ts";

export type KernelProfile = "micro" | "mini";

export interface BuildOptions {
  /** micro: allnoconfig + fragments; mini: x86_64_defconfig + fragments. */
  profile: KernelProfile;
  /** Which per-hypervisor required-symbol profiles the kernel must satisfy. */
  hypervisors: HypervisorKind[];
  /** Kernel source: Debian's linux-source tarball by default, or a local tarball/dir, or a URL (sha256 required). */
  kernelSource?: string;
  kernelSha256?: string;
  /** Ordered patch series applied to the kernel source. */
  kernelPatches: string[];
  /** Seconds since the epoch stamped into every artifact (reproducible builds). */
  sourceDateEpoch: number;
  verbose: boolean;
}

/** What a stage may use to describe its inputs; every value returned by Stage.inputs goes into its cache key. */
export interface KeyContext {
  repo: string;
  options: BuildOptions;
  /** sha256 of a file, memoised on (path, size, mtime, inode) so large inputs like /usr/bin/node are read once. */
  fileDigest(file: string): Promise<string>;
  /** Digest of a source tree; build outputs (build/, *.node, lock files) are not sources and are skipped. */
  treeDigest(dir: string): Promise<string>;
  /** First line of `<tool> --version` (or args); a missing tool throws an error naming its Debian package. */
  tool(name: string, pkg: string, args?: string[]): Promise<string>;
}

export interface BuildContext extends KeyContext {
  /** Empty directory the stage writes its outputs into. */
  out: string;
  /**
   * The stage's own directory that outlives its builds (outside every cache entry), for work worth keeping such
   * as an incremental build tree. Outputs must not depend on what is found there, only build time may.
   */
  keepDir: string;
  /** Output directory of a declared dependency. */
  dep(stage: string): string;
  /** A progress line (shown live; kept for the failure report). */
  log(line: string): void;
  /**
   * zx's `$` for the stage's tools (see shell.ts): ctx.$({ cwd })`make ${args}`. Output lines are streamed to the
   * task (when the terminal or --verbose shows them); a failure throws a StageError carrying the last lines.
   */
  $: ToolShell;
}

export interface Stage {
  name: string;
  title: string;
  deps: string[];
  inputs(ctx: KeyContext): Promise<Record<string, unknown>>;
  build(ctx: BuildContext): Promise<void>;
  /** out-relative file -> name under bin/ (or the release directory, with publishTo "dist") */
  publish: Record<string, string>;
  /** Where publish puts the files: bin/ (artifacts, the default) or dist/ (what a release publishes). */
  publishTo?: "bin" | "dist";
}

/** Keeps input digests across runs so a no-op build only stats large inputs. */
export class DigestMemo {
  private memo: Record<string, string> = {};
  private dirty = false;
  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    this.memo = JSON.parse(await readFile(this.file, "utf8").catch(() => "{}")) as Record<string, string>;
  }
  async save(): Promise<void> {
    if (this.dirty) await writeFile(this.file, JSON.stringify(this.memo));
  }
  async digest(file: string): Promise<string> {
    const abs = path.resolve(file);
    const st = await stat(abs).catch(() => {
      throw new Error(`input file ${abs} does not exist`);
    });
    const id = `${abs}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
    const known = this.memo[id];
    if (known) return known;
    const d = await hashFile(abs);
    this.memo[id] = d;
    this.dirty = true;
    return d;
  }
}

const BUILD_OUTPUT = /(^|\/)(build|node_modules)(\/|$)|\.node$|\.lock$|\.tmp-/;
function isBuildOutput(rel: string): boolean {
  return BUILD_OUTPUT.test(rel);
}

export function keyContext(repo: string, options: BuildOptions, memo: DigestMemo): KeyContext {
  return {
    repo,
    options,
    fileDigest: (f) => memo.digest(f),
    treeDigest: (d) => hashTree(d, { ignore: isBuildOutput, fileDigest: (f) => memo.digest(f) }),
    tool: (name, pkg, args) => toolVersion(name, pkg, args),
  };
}

/** The cache key of a stage: its name, its declared inputs and its dependencies' keys. */
export function stageKey(stage: Stage, inputs: Record<string, unknown>, depKeys: Record<string, string>): string {
  return sha256(JSON.stringify({ stage: stage.name, inputs, deps: depKeys }));
}

export { Cache };
