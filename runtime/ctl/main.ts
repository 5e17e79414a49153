import { existsSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { doctorMain } from "../doctor/cli.ts";
import { DEFAULT_DIR, DEFAULT_LISTEN } from "../sandboxer/flags.ts";
import { commandLine, splitExecArgs } from "./args.ts";
import { dialConsole, execOverConsole, shellOverConsole, TIMED_OUT } from "./console.ts";
import { formatTable, listSandboxes } from "./list.ts";
import { printLog } from "./logs.ts";
import { agentAddressOf, type Entry, readSandboxes, resolvePrefix } from "./sandboxes.ts";

const USAGE = `usage: kuasar-ctl <command> [options]
  list | ps [--json]                    sandboxes under --dir: state, the daemon's view, VMM pid, uptime, address
  logs [-f] [-n N] [--vmm] [--raw] <id> the guest's serial console (<dir>/<id>/console.log.1 and console.log;
                                        --vmm: the VMM's log); control characters are shown escaped (\\x1b),
                                        --raw prints the bytes as they are
  exec [--timeout S] <id> -- CMD...     run CMD in the guest's debug shell; its exit status becomes ours
                                        (124 on timeout, 125 when kuasar-ctl itself failed, 255 when the VM went away)
  shell <id>                            interactive debug shell (Ctrl-] disconnects)
  doctor [--json] [options]             check this host (the same checks as vmm-sandboxer check; doctor --help)
common options:
  -d, --dir DIR        the daemon's state directory (default ${DEFAULT_DIR})
  -l, --listen SOCKET  the daemon's socket (default ${DEFAULT_LISTEN})
<id> is a sandbox id or a unique prefix of one. exec and shell need the guest's debug console: debug = true
under [hypervisor.task] in the daemon's config (vsock port 1025, a root shell without authentication).
exec runs one argument as a shell command line and quotes several as words; stdin is /dev/null, stdout and
stderr arrive merged (a terminal).`;

/** exec's own failures, as timeout(1) and docker use it: the command's codes stay unambiguous. */
const CTL_FAILED = 125;
/** The console went away mid-command (ssh's convention). */
const CONNECTION_LOST = 255;
const DIAL_MS = 5000;

const common = {
  dir: { type: "string", short: "d", default: DEFAULT_DIR },
  listen: { type: "string", short: "l", default: DEFAULT_LISTEN },
  help: { type: "boolean", short: "h", default: false },
} as const;

class UsageError extends Error {}
class HelpRequested extends Error {}

/** Runs a parseArgs call: its errors become usage errors, -h/--help a request for the usage text. */
function args<T extends { values: { help?: boolean | undefined } }>(parse: () => T): T {
  let r: T;
  try {
    r = parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (r.values.help) throw new HelpRequested();
  return r;
}

function oneId(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new UsageError(`${command} takes one sandbox id (or unique prefix)`);
  return positionals[0]!;
}

async function resolve(dir: string, prefix: string): Promise<Entry> {
  return resolvePrefix(await readSandboxes(dir), prefix, dir);
}

/** The sandbox's running guest agent address, or an error saying why there is none. */
function runningAgent(e: Entry) {
  if (!e.record) throw new Error(`sandbox ${e.id}: ${e.error}`);
  if (e.record.state !== "running") {
    throw new Error(`sandbox ${e.id} is ${e.record.state}, so its VM has no console to connect to`);
  }
  const agent = agentAddressOf(e.record);
  if (!agent) throw new Error(`sandbox ${e.id}: ${e.dir}/sandbox.json records no guest agent address (runtime.agent)`);
  return agent;
}

async function list(argv: string[]): Promise<number> {
  const { values, positionals } = args(() =>
    parseArgs({
      args: argv,
      options: { ...common, json: { type: "boolean", default: false } },
      allowPositionals: true,
      strict: true,
    }),
  );
  if (positionals.length > 0) throw new UsageError(`list takes no arguments, got '${positionals[0]}'`);
  const { daemonLine, rows } = await listSandboxes(values.dir!, values.listen!);
  if (values.json) process.stdout.write(`${JSON.stringify({ daemon: daemonLine, sandboxes: rows }, null, 2)}\n`);
  else if (rows.length === 0) process.stdout.write(`${daemonLine}\nno sandboxes under ${values.dir}\n`);
  else process.stdout.write(formatTable(rows, daemonLine));
  return 0;
}

async function logs(argv: string[]): Promise<number> {
  const { values, positionals } = args(() =>
    parseArgs({
      args: argv,
      options: {
        ...common,
        follow: { type: "boolean", short: "f", default: false },
        lines: { type: "string", short: "n" },
        vmm: { type: "boolean", default: false },
        raw: { type: "boolean", default: false },
      },
      allowPositionals: true,
      strict: true,
    }),
  );
  const lines = values.lines === undefined ? undefined : Number(values.lines);
  if (lines !== undefined && !(Number.isInteger(lines) && lines >= 0)) {
    throw new UsageError(`-n takes a number of lines, got '${values.lines}'`);
  }
  const e = await resolve(values.dir!, oneId(positionals, "logs"));
  const file = path.join(e.dir, values.vmm ? "vmm.log" : "console.log");
  if (!existsSync(file)) {
    throw new Error(`${file} does not exist: sandbox ${e.id} has not booted a VM (yet)`);
  }
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  await printLog(file, process.stdout, {
    follow: values.follow!,
    raw: values.raw!,
    ...(lines !== undefined ? { lines } : {}),
    signal: stop.signal,
  });
  return 0;
}

async function exec(argv: string[]): Promise<number> {
  const { own, id: prefix, command: cmd } = splitExecArgs(argv);
  const { values } = args(() =>
    parseArgs({
      args: own,
      options: { ...common, timeout: { type: "string" } },
      allowPositionals: false,
      strict: true,
    }),
  );
  if (!prefix || cmd.length === 0) throw new UsageError("exec needs a sandbox id and a command: exec <id> -- CMD...");
  const timeout = values.timeout === undefined ? undefined : Number(values.timeout);
  if (timeout !== undefined && !(timeout > 0)) {
    throw new UsageError(`--timeout takes seconds greater than 0, got '${values.timeout}'`);
  }
  const deadline = timeout === undefined ? undefined : Date.now() + timeout * 1000;
  const timedOut = () => {
    process.stderr.write(`kuasar-ctl: exec timed out after ${timeout} s\n`);
    return TIMED_OUT;
  };
  const e = await resolve(values.dir!, prefix);
  const agent = runningAgent(e);
  let sock: Awaited<ReturnType<typeof dialConsole>>;
  try {
    sock = await dialConsole(e.id, agent, deadline === undefined ? DIAL_MS : Math.min(DIAL_MS, deadline - Date.now()));
  } catch (err) {
    if (deadline !== undefined && Date.now() >= deadline) return timedOut();
    throw err;
  }
  const remaining = deadline === undefined ? undefined : Math.max(1, deadline - Date.now());
  try {
    const code = await execOverConsole(sock, commandLine(cmd), process.stdout, remaining);
    return code === TIMED_OUT && remaining !== undefined && Date.now() >= deadline! ? timedOut() : code;
  } catch (err) {
    process.stderr.write(`kuasar-ctl: sandbox ${e.id}: ${(err as Error).message}\n`);
    return CONNECTION_LOST;
  }
}

async function shell(argv: string[]): Promise<number> {
  const { values, positionals } = args(() =>
    parseArgs({ args: argv, options: common, allowPositionals: true, strict: true }),
  );
  const e = await resolve(values.dir!, oneId(positionals, "shell"));
  const sock = await dialConsole(e.id, runningAgent(e), DIAL_MS);
  if (process.stdin.isTTY) process.stderr.write(`connected to ${e.id}'s debug console; Ctrl-] disconnects\r\n`);
  await shellOverConsole(sock, process.stdin, process.stdout);
  return 0;
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  list,
  ps: list,
  logs,
  exec,
  shell,
  doctor: (argv) => doctorMain(argv, "kuasar-ctl doctor"),
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "-h" || command === "--help") {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`kuasar-ctl: unknown command '${command}'\n${USAGE}\n`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const usage = err instanceof UsageError;
    process.stderr.write(`kuasar-ctl ${command}: ${(err as Error).message}${usage ? `\n${USAGE}` : ""}\n`);
    if (command === "exec") return CTL_FAILED;
    return usage ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`kuasar-ctl: ${err.message}\n`);
    process.exit(1);
  },
);
