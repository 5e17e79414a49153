import { copyFile, readdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { layout } from "../../installers/install-vmm.ts";
import { HYPERVISORS } from "../../runtime/sandboxer/hypervisor/names.ts";
import { artifactNames, bundleInstaller } from "../installer-image/image.ts";
import type { LayerEntry } from "../installer-image/oci.ts";
import { bundleNode } from "../lib/bundle.ts";
import { hashFile } from "../lib/hash.ts";
import { writeTarZst, ZSTD_ARGS } from "./archive.ts";
import { hostDpkg } from "./debian.ts";
import {
  BIN_DIR,
  bundleName,
  INSTALL_SH,
  INSTALLER_CJS,
  KUBERNETES_DIR,
  NODE_INSTALLER_CJS,
  SUMS,
  sbomName,
  unameArch,
} from "./names.ts";
import { cycloneDx } from "./sbom.ts";
import { sbomFacts } from "./sbom-facts.ts";
import { formatSums } from "./sums.ts";

export interface DistInput {
  repo: string;
  version: string;
  /** SOURCE_DATE_EPOCH: every mtime in the tar, and the SBOM's timestamp */
  epoch: number;
  /** bin/ name -> file, for every name install-vmm lays out (artifactNames()) */
  artifacts: Record<string, string>;
  /** The guest agent's scripts by guest path (bin/vmm-task is /usr/lib/vmm-task/vmm-task.js): which npm packages the image carries */
  guestScripts: Record<string, string>;
  /** Where the bundle, its SBOM and SHA256SUMS are written */
  out: string;
  scratch: string;
  log?: (line: string) => void;
}

export interface DistResult {
  bundle: string;
  sbom: string;
  sums: string;
  /** Paths inside the bundle, sorted */
  files: string[];
}

/** Bundle modes do not depend on the builder's umask or copies: executables 0755, the rest 0644. */
function binModes(): Map<string, number> {
  const modes = new Map<string, number>();
  for (const h of HYPERVISORS) {
    for (const e of layout(h)) modes.set(e.src, e.script || e.mode & 0o111 ? 0o755 : 0o644);
  }
  return modes;
}

/** The bin/ names of node programs (install-vmm points their #! line at the bundled node). */
function scriptNames(): string[] {
  return [
    ...new Set(
      HYPERVISORS.flatMap((h) =>
        layout(h)
          .filter((e) => e.script)
          .map((e) => e.src),
      ),
    ),
  ].sort();
}

interface BundleFile {
  path: string;
  mode: number;
  source: string;
}

/**
 * The release bundle: bin/ (what install-vmm lays out, under its bin/ names), install.sh, lib/install.cjs (install-vmm's
 * command line), lib/node-installer.cjs (the Kubernetes node installer's program), kubernetes/ (the manifests), the
 * SBOM and SHA256SUMS of every other file; beside it the SBOM again and SHA256SUMS of the two.
 */
export async function buildDist(input: DistInput): Promise<DistResult> {
  const log = input.log ?? (() => {});
  const modes = binModes();
  const entries: BundleFile[] = [];
  for (const name of artifactNames()) {
    const source = input.artifacts[name];
    if (!source || !(await stat(source).catch(() => undefined))?.isFile()) {
      throw new Error(
        `the bundle needs ${name}, which install-vmm lays out, but ${source ?? "no file"} was given; build it first (make all)`,
      );
    }
    entries.push({ path: `${BIN_DIR}/${name}`, mode: modes.get(name)!, source });
  }

  log("bundling installers/dist/main.ts and installers/node-installer/cli.ts");
  const installCjs = path.join(input.scratch, "install.cjs");
  await bundleNode(path.join(input.repo, "installers/dist/main.ts"), installCjs);
  const nodeInstallerCjs = path.join(input.scratch, "node-installer.cjs");
  await bundleInstaller(nodeInstallerCjs);
  entries.push(
    { path: INSTALL_SH, mode: 0o755, source: path.join(input.repo, "installers/dist/install.sh") },
    { path: INSTALLER_CJS, mode: 0o644, source: installCjs },
    { path: NODE_INSTALLER_CJS, mode: 0o644, source: nodeInstallerCjs },
  );
  const k8s = path.join(input.repo, "installers/kubernetes");
  for (const f of (await readdir(k8s)).filter((n) => n.endsWith(".yaml")).sort()) {
    entries.push({ path: `${KUBERNETES_DIR}/${f}`, mode: 0o644, source: path.join(k8s, f) });
  }

  log("SBOM: npm packages in the programs, Debian packages in the guest, kernel, node");
  const facts = await sbomFacts({
    repo: input.repo,
    artifacts: input.artifacts,
    programs: [
      ...scriptNames().map((n) => ({ name: `${BIN_DIR}/${n}`, file: input.artifacts[n]! })),
      { name: INSTALLER_CJS, file: installCjs },
      { name: NODE_INSTALLER_CJS, file: nodeInstallerCjs },
    ],
    guestScripts: input.guestScripts,
    host: hostDpkg,
  });
  const sbom = `${JSON.stringify(cycloneDx({ version: input.version, epoch: input.epoch, ...facts }), null, 2)}\n`;
  const sbomFile = sbomName(input.version);
  await writeFile(path.join(input.scratch, sbomFile), sbom);
  entries.push({ path: sbomFile, mode: 0o644, source: path.join(input.scratch, sbomFile) });

  log(`SHA256SUMS of ${entries.length} files`);
  const sums = [];
  for (const e of entries) sums.push({ path: e.path, sha256: await hashFile(e.source) });
  const tar: LayerEntry[] = [
    ...entries.map((e) => ({ ...e, type: "file" as const })),
    { path: SUMS, type: "file", mode: 0o644, data: Buffer.from(formatSums(sums)) },
  ];

  const bundle = path.join(input.out, bundleName(input.version, unameArch()));
  log(`writing ${path.basename(bundle)} (zstd ${ZSTD_ARGS.join(" ")})`);
  await writeTarZst(tar, bundle, input.epoch);
  await copyFile(path.join(input.scratch, sbomFile), path.join(input.out, sbomFile));
  const beside = [
    { path: path.basename(bundle), sha256: await hashFile(bundle) },
    { path: sbomFile, sha256: await hashFile(path.join(input.out, sbomFile)) },
  ];
  await writeFile(path.join(input.out, SUMS), formatSums(beside));
  return {
    bundle,
    sbom: path.join(input.out, sbomFile),
    sums: path.join(input.out, SUMS),
    files: tar.map((e) => e.path).sort(),
  };
}
