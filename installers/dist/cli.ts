import path from "node:path";
import { parseArgs } from "node:util";
import { HYPERVISORS, type HypervisorKind } from "../../runtime/sandboxer/hypervisor/names.ts";
import { installVmm, uninstallVmm } from "../install-vmm.ts";

// The release bundle's installer: install-vmm with a command line, bundled to lib/install.cjs and run by install.sh
// on the bundle's own node, so a host needs neither the source tree nor Node.js.

export const USAGE = `usage: ./install.sh [--dest-dir DIR] [--hypervisor ${HYPERVISORS.join("|")}]
       ./install.sh --uninstall [--dest-dir DIR]
Lays out what make install-vmm lays out, from this bundle: programs, node runtime, kernel, image, initrd, unit,
sysconfig, config.toml (kept when present) and the containerd drop-in. --uninstall removes exactly what install
wrote (an edited config.toml or sysconfig stays).
  --dest-dir DIR   install root (default /)
  --hypervisor H   which config.toml to install (default qemu)`;

export interface InstallCliIo {
  out(line: string): void;
  err(line: string): void;
}

export async function installCli(argv: string[], io: InstallCliIo): Promise<number> {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
    if (!values["bin-dir"]) throw new Error("--bin-dir is missing (install.sh passes the bundle's bin/)");
    if (values.uninstall && values.hypervisor) throw new Error("--hypervisor has no meaning with --uninstall");
    if (values.hypervisor && !(HYPERVISORS as readonly string[]).includes(values.hypervisor)) {
      throw new Error(`--hypervisor must be one of ${HYPERVISORS.join(", ")}, got '${values.hypervisor}'`);
    }
  } catch (err) {
    io.err(`install.sh: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const destDir = path.resolve(values["dest-dir"]!);
  try {
    if (values.uninstall) {
      const removed = await uninstallVmm({ destDir });
      io.out(`removed ${removed.length} files under ${destDir}`);
      return 0;
    }
    const hypervisor = (values.hypervisor ?? "qemu") as HypervisorKind;
    const written = await installVmm({ binDir: path.resolve(values["bin-dir"]!), destDir, hypervisor });
    io.out(`installed ${written.length} files under ${destDir} (config for ${hypervisor})`);
    if (destDir === "/") {
      io.out(
        "next: vmm-sandboxer check; systemctl daemon-reload; systemctl enable --now kuasar-vmm; systemctl restart containerd",
      );
    }
    return 0;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e.code === "EACCES" || e.code === "EPERM"
        ? `; run it as root, or install under a directory you may write with --dest-dir`
        : "";
    io.err(`install.sh: ${e.message}${hint}`);
    return 1;
  }
}

function parse(argv: string[]) {
  const r = parseArgs({
    args: argv,
    allowPositionals: false,
    strict: true,
    options: {
      "bin-dir": { type: "string" },
      "dest-dir": { type: "string", default: "/" },
      hypervisor: { type: "string" },
      uninstall: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  return r;
}
