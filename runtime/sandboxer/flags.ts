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

/** Kuasar's defaults; kuasar-ctl and the host check use the same ones. */
export const DEFAULT_CONFIG = "/var/lib/kuasar/config.toml";
export const DEFAULT_DIR = "/run/kuasar-vmm";
export const DEFAULT_LISTEN = "/run/vmm-sandboxer.sock";

export const USAGE = `usage: vmm-sandboxer [options]
       vmm-sandboxer check [--json] [options]   check this host and say what to fix (--help for more)
  -c, --config FILE     configuration (default ${DEFAULT_CONFIG})
  -d, --dir DIR         per-sandbox state directory (default ${DEFAULT_DIR})
  -l, --listen SOCKET   containerd sandbox API socket (default ${DEFAULT_LISTEN})
      --log-level LEVEL error|warn|info|debug|trace (overrides the config's sandbox.log_level)
  -v, --version         print the version and exit`;

/** The options that locate a daemon (config, state dir, socket); `vmm-sandboxer check` takes the same ones. */
export const LOCATION_OPTIONS = {
  config: { type: "string", short: "c" },
  dir: { type: "string", short: "d", default: DEFAULT_DIR },
  listen: { type: "string", short: "l", default: DEFAULT_LISTEN },
} as const;

/** Kuasar's flags, so its unit files and habits keep working. */
export function parseFlags(argv: string[]): Flags {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      ...LOCATION_OPTIONS,
      "log-level": { type: "string" },
      version: { type: "boolean", short: "v", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (positionals.length) throw new Error(`unexpected argument '${positionals[0]}'`);
  return {
    config: values.config ?? DEFAULT_CONFIG,
    configExplicit: values.config !== undefined,
    dir: values.dir!,
    listen: values.listen!,
    logLevel: values["log-level"],
    version: values.version!,
    help: values.help!,
  };
}
