import { parseArgs } from "node:util";
import { DEFAULT_CONFIG, DEFAULT_DIR, DEFAULT_LISTEN, LOCATION_OPTIONS } from "../sandboxer/flags.ts";
import { runDoctor } from "./index.ts";
import { exitCode, formatText } from "./report.ts";

export const DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml";

export function doctorUsage(prog: string): string {
  return `usage: ${prog} [options]
Checks this host for kuasar-vmm: one verdict per check and what to fix. Exit status 0 when no check failed
(warnings allowed), 1 when one did, 2 on bad usage.
  -c, --config FILE            the daemon's configuration (default ${DEFAULT_CONFIG})
  -d, --dir DIR                the daemon's state directory (default ${DEFAULT_DIR})
  -l, --listen SOCKET          the daemon's socket (default ${DEFAULT_LISTEN})
      --containerd-config FILE containerd's config (default ${DEFAULT_CONTAINERD_CONFIG}), with its imports
      --json                   the report as JSON: {ok, failed, warnings, checks: [{id, status, verdict, fix}]}`;
}

/** `vmm-sandboxer check` and `kuasar-ctl doctor`: prog names the command in messages. */
export async function doctorMain(argv: string[], prog: string): Promise<number> {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (err) {
    process.stderr.write(`${prog}: ${(err as Error).message}\n${doctorUsage(prog)}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${doctorUsage(prog)}\n`);
    return 0;
  }
  const report = await runDoctor({
    config: values.config ?? DEFAULT_CONFIG,
    configExplicit: values.config !== undefined,
    dir: values.dir!,
    listen: values.listen!,
    containerdConfig: values["containerd-config"]!,
  });
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatText(report));
  return exitCode(report);
}

function parse(argv: string[]) {
  const r = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      ...LOCATION_OPTIONS,
      "containerd-config": { type: "string", default: DEFAULT_CONTAINERD_CONFIG },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (r.positionals.length > 0) throw new Error(`unexpected argument '${r.positionals[0]}'`);
  return r;
}
