import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { hashFile, sha256 } from "../lib/hash.ts";
import type { ArtifactManifest } from "../rootfs/manifest.ts";
import { AGENT_BUNDLE, AGENT_DIR, AGENT_INIT } from "../rootfs/validate.ts";
import { attribute, type GuestFile, type HostPackages } from "./debian.ts";
import { readLock, shippedPackages } from "./npm.ts";
import type { KernelFacts, SbomInput } from "./sbom.ts";

// What the SBOM says, gathered from the artifacts themselves: the programs' bundles, the guest image's manifest,
// the kernel's manifest, the node binary, and the build host's dpkg for where the guest's files came from.

export interface FactsInput {
  repo: string;
  /** bin/ name -> file (the bundle's bin/) */
  artifacts: Record<string, string>;
  /** Node programs the bundle ships, by their path in the bundle */
  programs: { name: string; file: string }[];
  /** The agent's JavaScript the guest image carries, by guest path (/usr/lib/vmm-task/vmm-task.js <- bin/vmm-task) */
  guestScripts: Record<string, string>;
  host: HostPackages;
}

interface KernelManifest {
  kernelVersion: string;
  profile: string;
  hypervisors: string[];
  source: { kind: string; location: string; sha256?: string };
  patches: { file: string; sha256: string }[];
  configSha256: string;
  artifacts: Record<string, { size: number; sha256: string }>;
}

async function readJson<T>(file: string | undefined, what: string): Promise<T> {
  if (!file) throw new Error(`no ${what} was given; build it first (make all)`);
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (err) {
    throw new Error(`${file} (${what}) cannot be read: ${(err as Error).message}; rebuild it (make all)`);
  }
}

/** "v20.20.2" or "BusyBox v1.35.0 (...)" -> "20.20.2" / "1.35.0". */
function versionIn(line: string | undefined): string | undefined {
  return line ? /(\d+\.\d+(?:\.\d+)?[^\s),]*)/.exec(line)?.[1] : undefined;
}

export async function sbomFacts(input: FactsInput): Promise<Omit<SbomInput, "version" | "epoch">> {
  const lock = readLock(await readFile(path.join(input.repo, "package-lock.json"), "utf8"));

  // The image and the initrd hold the same root; read both so neither can carry a file the SBOM misses.
  const guest = new Map<string, GuestFile>();
  const versions: Record<string, string> = {};
  for (const name of ["kuasar.img.manifest.json", "kuasar.initrd.manifest.json"]) {
    const m = await readJson<ArtifactManifest>(input.artifacts[name], name);
    Object.assign(versions, m.components);
    for (const e of m.entries) if (e.type === "file" && e.sha256) guest.set(e.path, { path: e.path, sha256: e.sha256 });
  }
  // Every script of the agent's directory must be one given here, byte for byte, so none escapes the SBOM.
  const scripts = [...guest.keys()].filter((p) => p.startsWith(`/${AGENT_DIR}/`) && p.endsWith(".js"));
  if (!scripts.includes(`/${AGENT_BUNDLE}`))
    throw new Error(`the guest image carries no /${AGENT_BUNDLE}; rebuild it (make all)`);
  const texts = [];
  for (const p of input.programs) texts.push({ name: p.name, text: await readFile(p.file, "utf8") });
  for (const p of scripts) {
    const file = input.guestScripts[p];
    if (!file)
      throw new Error(`the guest image carries ${p}, which was not given to the SBOM; rebuild both (make all)`);
    const bytes = await readFile(file);
    const digest = sha256(bytes);
    if (guest.get(p)!.sha256 !== digest) {
      throw new Error(
        `${file} (sha256 ${digest.slice(0, 12)}…) is not the ${p} the guest image carries (${guest.get(p)!.sha256.slice(0, 12)}…); rebuild both (make all)`,
      );
    }
    texts.push({ name: `guest ${p}`, text: bytes.toString("utf8") });
  }
  for (const p of Object.keys(input.guestScripts)) {
    if (!scripts.includes(p)) throw new Error(`the guest image carries no ${p}; rebuild both (make all)`);
  }
  const npm = shippedPackages(texts, lock);

  // Ours: the agent and the static files from rootfs/; everything else in the guest came from somewhere.
  const ours = (p: string) =>
    p === `/${AGENT_INIT}` || p.startsWith(`/${AGENT_DIR}/`) || existsSync(path.join(input.repo, "rootfs", p));
  const { packages, unattributed } = await attribute(
    [...guest.values()].filter((f) => !ours(f.path)),
    input.host,
  );

  const km = await readJson<KernelManifest>(input.artifacts["vmlinux.manifest.json"], "vmlinux.manifest.json");
  const vmlinux = await hashFile(input.artifacts["vmlinux.bin"]!);
  if (km.artifacts["vmlinux.bin"]?.sha256 !== vmlinux) {
    throw new Error(
      `${input.artifacts["vmlinux.bin"]} is not the kernel vmlinux.manifest.json describes; rebuild it (make bin/vmlinux.bin)`,
    );
  }
  const kernel: KernelFacts = {
    version: km.kernelVersion,
    configSha256: km.configSha256,
    sha256: vmlinux,
    profile: km.profile,
    hypervisors: km.hypervisors,
    source: km.source,
    patches: km.patches,
  };
  if (km.source.sha256) {
    const src = await attribute([{ path: km.source.location, sha256: km.source.sha256 }], input.host);
    const pkg = src.packages[0];
    if (pkg) kernel.sourcePackage = { name: pkg.name, version: pkg.version, arch: pkg.arch };
  }

  const nodeFile = input.artifacts.node!;
  const { stdout } = await promisify(execFile)(nodeFile, ["--version"]).catch((err: Error) => {
    throw new Error(`${nodeFile} --version failed (${err.message}): the bundle's node must run on the build host`);
  });

  return {
    npm,
    debian: { distro: await input.host.distro(), packages },
    guestFiles: unattributed.map((f) => {
      const version = versionIn(versions[path.basename(f.path)]);
      return version ? { ...f, version } : f;
    }),
    kernel,
    node: { version: stdout.trim(), sha256: await hashFile(nodeFile) },
  };
}
