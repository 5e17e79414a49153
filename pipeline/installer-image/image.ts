import { stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { layout } from "../../installers/install-vmm.ts";
import { imageName } from "../../installers/node-installer/image-name.ts";
import { ARTIFACTS_DIR, INSTALLER_PATH, NODE_PATH } from "../../installers/node-installer/paths.ts";
import { HYPERVISORS } from "../../runtime/sandboxer/hypervisor/names.ts";
import { bundleNode } from "../lib/bundle.ts";
import { hashFile } from "../lib/hash.ts";
import { lddClosure } from "../rootfs/elf.ts";
import { type Blob, type LayerEntry, ociArch, writeOciArchive } from "./oci.ts";

/** Host programs the installer runs inside the image: node for itself, nsenter to reach the host. */
export const RUNTIME_ELFS = [
  { path: NODE_PATH, pkg: "nodejs" },
  { path: "/usr/bin/nsenter", pkg: "util-linux" },
];

/** bin/ names of everything install-vmm lays out, for any hypervisor (the installer picks one at run time). */
export function artifactNames(): string[] {
  const names = HYPERVISORS.flatMap((h) => layout(h).map((e) => e.src));
  return [...new Set(names)].sort();
}

/** The installer entrypoint as one CommonJS file (smol-toml and install.ts included). */
export async function bundleInstaller(outFile: string): Promise<void> {
  await bundleNode(fileURLToPath(new URL("../../installers/node-installer/cli.ts", import.meta.url)), outFile);
}

export interface NodeInstallerInput {
  /** bin/ name -> file, for every name artifactNames() lists. */
  artifacts: Record<string, string>;
  /** The bundled installer (bundleInstaller). */
  installer: string;
  /** Host ELFs to ship with their library closure (RUNTIME_ELFS). */
  elfs: string[];
  version: string;
  epoch: number;
  out: string;
  scratch: string;
}

/**
 * The node-installer image: a runtime layer (node, nsenter, their libraries) below a layer with the artifacts and
 * the installer, so an upgrade of kuasar-vmm alone re-sends only the second.
 */
export async function buildNodeInstallerImage(input: NodeInstallerInput): Promise<Blob> {
  const runtime: LayerEntry[] = [{ path: "tmp", type: "dir", mode: 0o1777 }];
  for (const elf of input.elfs) runtime.push({ path: elf, type: "file", mode: 0o755, source: elf });
  // The loader must be executable (the kernel opens PT_INTERP for exec); libraries keep their host mode.
  for (const lib of await lddClosure(input.elfs)) {
    runtime.push({ path: lib.path, type: "file", mode: (await stat(lib.path)).mode & 0o755, source: lib.path });
  }

  const app: LayerEntry[] = [{ path: INSTALLER_PATH, type: "file", mode: 0o644, source: input.installer }];
  for (const name of artifactNames()) {
    const file = input.artifacts[name];
    if (!file) throw new Error(`no file given for the artifact '${name}' that install-vmm lays out`);
    const dst = path.posix.join(ARTIFACTS_DIR, name);
    // The node runtime install-vmm lays out is the runtime layer's node: link it rather than carry it twice.
    const same = await findIdentical(file, input.elfs);
    if (same) {
      app.push({ path: dst, type: "symlink", target: same });
      continue;
    }
    const exec = (await stat(file)).mode & 0o111;
    app.push({ path: dst, type: "file", mode: exec ? 0o755 : 0o644, source: file });
  }

  const name = imageName(input.version);
  return writeOciArchive(
    {
      name,
      layers: [
        { entries: runtime, createdBy: `kuasar-build node-installer: ${input.elfs.join(", ")} and their libraries` },
        { entries: app, createdBy: "kuasar-build node-installer: kuasar-vmm artifacts and the installer" },
      ],
      config: {
        Entrypoint: [NODE_PATH, INSTALLER_PATH],
        Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        WorkingDir: "/",
        Labels: {
          "org.opencontainers.image.title": "kuasar-vmm node installer",
          "org.opencontainers.image.version": input.version,
        },
      },
      epoch: input.epoch,
      architecture: ociArch(),
    },
    input.out,
    input.scratch,
  );
}

/** The runtime file with the same bytes as file, if any. */
async function findIdentical(file: string, candidates: string[]): Promise<string | undefined> {
  const size = (await stat(file)).size;
  for (const c of candidates) {
    if ((await stat(c)).size === size && (await hashFile(c)) === (await hashFile(file))) return c;
  }
  return undefined;
}
