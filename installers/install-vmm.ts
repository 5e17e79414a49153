import { chmod, copyFile, mkdir, readFile, rm, rmdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { HypervisorKind } from "../runtime/sandboxer/hypervisor/names.ts";
import { hashFile } from "./file-digest.ts";

/** Stages whose artifacts install-vmm lays out. */
export const INSTALL_TARGETS = ["sandboxer", "kernel", "image", "initrd", "units"];

const CONFIG_FOR: Record<HypervisorKind, string> = {
  qemu: "config_qemu_x86_64.toml",
  "cloud-hypervisor": "config_clh.toml",
  stratovirt: "config_stratovirt_x86_64.toml",
};

interface Entry {
  /** name under bin/ */
  src: string;
  /** path under the install root */
  dst: string;
  mode: number;
  /** an existing file is an operator's edit: keep it */
  keepExisting?: boolean;
  /** a node program: installed to run on the private runtime, not on whatever node the host has (if any) */
  script?: boolean;
}

/** The node runtime install-vmm lays out for its programs (built with it; the host's own node is not used). */
export const NODE_RUNTIME = "/usr/local/lib/kuasar-vmm/node";

/**
 * Kuasar's install layout (kuasar-contract.md), plus the host-side vsock and ns (mount(2)) addons the daemon loads, the shim helper
 * containerd resolves on PATH from runtime_type after it restarts, and the operator's tool kuasar-ctl.
 */
export function layout(hypervisor: HypervisorKind): Entry[] {
  return [
    { src: "vmm-sandboxer", dst: "usr/local/bin/vmm-sandboxer", mode: 0o550, script: true },
    { src: "kuasar-ctl", dst: "usr/local/bin/kuasar-ctl", mode: 0o550, script: true },
    {
      src: "containerd-shim-kuasar-vmm-v1",
      dst: "usr/local/bin/containerd-shim-kuasar-vmm-v1",
      mode: 0o555,
      script: true,
    },
    { src: "node", dst: NODE_RUNTIME.slice(1), mode: 0o555 },
    { src: "vsock.node", dst: "usr/local/lib/kuasar-vmm/vsock.node", mode: 0o550 },
    { src: "ns.node", dst: "usr/local/lib/kuasar-vmm/ns.node", mode: 0o550 },
    { src: "vmlinux.bin", dst: "var/lib/kuasar/vmlinux.bin", mode: 0o640 },
    { src: "kuasar.img", dst: "var/lib/kuasar/kuasar.img", mode: 0o640 },
    { src: "kuasar.initrd", dst: "var/lib/kuasar/kuasar.initrd", mode: 0o640 },
    // Beside each guest artifact, so `vmm-sandboxer check` can verify what is installed.
    ...["vmlinux", "kuasar.img", "kuasar.initrd"].map((a) => ({
      src: `${a}.manifest.json`,
      dst: `var/lib/kuasar/${a}.manifest.json`,
      mode: 0o640,
    })),
    { src: CONFIG_FOR[hypervisor], dst: "var/lib/kuasar/config.toml", mode: 0o640, keepExisting: true },
    { src: "kuasar-vmm.service", dst: "usr/lib/systemd/system/kuasar-vmm.service", mode: 0o644 },
    { src: "kuasar-vmm.sysconfig", dst: "etc/sysconfig/kuasar-vmm", mode: 0o644, keepExisting: true },
    { src: "containerd-kuasar-vmm.toml", dst: "etc/containerd/conf.d/kuasar-vmm.toml", mode: 0o644 },
  ];
}

const DIR_MODES: Record<string, number> = { "var/lib/kuasar": 0o750 };
const MANIFEST = "var/lib/kuasar/.install-manifest.json";

interface InstallManifest {
  files: string[];
  dirs: string[];
  /** sha256 of operator-editable files as installed: uninstall leaves them if they were edited since. */
  editable: Record<string, string>;
}

export async function installVmm(opts: {
  binDir: string;
  destDir: string;
  hypervisor: HypervisorKind;
}): Promise<string[]> {
  const entries = layout(opts.hypervisor);
  for (const e of entries) {
    if (!(await exists(path.join(opts.binDir, e.src)))) {
      throw new Error(`${path.join(opts.binDir, e.src)} is missing; build it first (make all)`);
    }
  }
  // A staging DEST_DIR (packaging) may not exist yet, as with make install DESTDIR=.
  await mkdir(opts.destDir, { recursive: true });
  const previous = await readManifest(opts.destDir);
  const written = new Set(previous.files);
  const created = new Set(previous.dirs);
  const editable = { ...previous.editable };
  for (const e of entries) {
    const dst = path.join(opts.destDir, e.dst);
    for (const dir of ancestors(e.dst)) {
      const abs = path.join(opts.destDir, dir);
      if (!(await exists(abs))) {
        await mkdir(abs);
        created.add(dir);
      }
      if (DIR_MODES[dir] !== undefined) await chmod(abs, DIR_MODES[dir]);
    }
    if (e.keepExisting && (await exists(dst))) continue;
    await rm(dst, { force: true });
    if (e.script) await writeFile(dst, withInterpreter(await readFile(path.join(opts.binDir, e.src), "utf8")));
    else await copyFile(path.join(opts.binDir, e.src), dst);
    await chmod(dst, e.mode);
    written.add(e.dst);
    if (e.keepExisting) editable[e.dst] = await hashFile(dst);
  }
  const manifest: InstallManifest = { files: [...written].sort(), dirs: [...created].sort(), editable };
  await writeFile(path.join(opts.destDir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o640 });
  return manifest.files;
}

/** The script with its #! line pointing at the private runtime. */
export function withInterpreter(script: string): string {
  const body = script.startsWith("#!") ? script.slice(script.indexOf("\n") + 1) : script;
  return `#!${NODE_RUNTIME}\n${body}`;
}

/**
 * Removes exactly what install wrote: its files (except editable ones the operator changed since), then the
 * directories it created if they are empty.
 */
export async function uninstallVmm(opts: { destDir: string }): Promise<string[]> {
  const m = await readManifest(opts.destDir);
  const removed: string[] = [];
  for (const f of m.files) {
    const abs = path.join(opts.destDir, f);
    const pristine = m.editable[f];
    if (pristine && (await exists(abs)) && (await hashFile(abs)) !== pristine) continue;
    await rm(abs, { force: true });
    removed.push(f);
  }
  await rm(path.join(opts.destDir, MANIFEST), { force: true });
  // Deepest first, so a parent is tried after its children.
  for (const d of [...m.dirs].sort((a, b) => b.length - a.length)) {
    await rmdir(path.join(opts.destDir, d)).catch(() => undefined);
  }
  return removed;
}

async function readManifest(destDir: string): Promise<InstallManifest> {
  const file = path.join(destDir, MANIFEST);
  try {
    return {
      editable: {},
      ...(JSON.parse(await readFile(file, "utf8")) as Partial<InstallManifest>),
    } as InstallManifest;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { files: [], dirs: [], editable: {} };
    throw new Error(`${file} is not a valid install manifest (${(err as Error).message}); remove it to start over`);
  }
}

/** "a/b/c/file" -> ["a", "a/b", "a/b/c"] */
function ancestors(rel: string): string[] {
  const parts = rel.split("/").slice(0, -1);
  return parts.map((_, i) => parts.slice(0, i + 1).join("/"));
}

async function exists(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined)) !== undefined;
}
