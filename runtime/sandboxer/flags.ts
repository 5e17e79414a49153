import { parseArgs } from "node:util";

export interface Flags {
  config: string;
  /** true when --config was given: a missing file is then an error, not a fallback to defaults. */
  configExplicit: boolean;
  dir: string;
  listen: string;
  logLevel?: string;
  version: boolean;
  help: boolean;
}

export const USAGE = `usage: vmm-sandboxer [options]
  -c, --config FILE     configuration (default /var/lib/kuasar/config.toml)
  -d, --dir DIR         per-sandbox state directory (default /run/kuasar-vmm)
  -l, --listen SOCKET   containerd sandbox API socket (default /run/vmm-sandboxer.sock)
      --log-level LEVEL error|warn|info|debug|trace (overrides the config's sandbox.log_level)
  -v, --version         print the version and exit`;

/** Kuasar's flags, so its unit files and habits keep working. */
export function parseFlags(argv: string[]): Flags {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string", short: "c" },
      dir: { type: "string", short: "d", default: "/run/kuasar-vmm" },
      listen: { type: "string", short: "l", default: "/run/vmm-sandboxer.sock" },
      "log-level": { type: "string" },
      version: { type: "boolean", short: "v", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (positionals.length) throw new Error(`unexpected argument '${positionals[0]}'`);
  return {
    config: values.config ?? "/var/lib/kuasar/config.toml",
    configExplicit: values.config !== undefined,
    dir: values.dir!,
    listen: values.listen!,
    logLevel: values["log-level"],
    version: values.version!,
    help: values.help!,
  };
}
