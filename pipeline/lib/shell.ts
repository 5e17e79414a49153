import { StringDecoder } from "node:string_decoder";
import { $, type LogEntry, type Options, type ProcessOutput } from "zx";
import { StageError } from "./stage-error.ts";

/**
 * zx's `$` for a tool whose output is read rather than shown: nothing echoed to the terminal, and no stdin
 * (zx's default stdin is a pipe left open, so a tool that reads it would wait forever).
 */
export const $quiet = $({ quiet: true, stdio: ["ignore", "pipe", "pipe"] });

/**
 * What a stage may set per command. `cwd` rather than zx's `cd`/`within`: `cd` moves every later command, and
 * the key path runs tools in parallel. `env` replaces the environment (zx's rule), so extend process.env
 * yourself when the tool needs PATH and friends. `nothrow` returns a failed run instead of throwing.
 */
export type ToolOptions = Partial<Pick<Options, "cwd" | "env" | "nothrow">>;

/** A stage's `$`: ctx.$`make -j${jobs}`, or ctx.$({ cwd })`make`. Resolves to zx's ProcessOutput. */
export interface ToolShell {
  (pieces: TemplateStringsArray, ...args: unknown[]): Promise<ProcessOutput>;
  (opts: ToolOptions): ToolShell;
}

/** How many of a failed tool's last output lines its error carries. */
export const TAIL_LINES = 25;

/**
 * Runs a stage's tools through zx: arguments are quoted by `$`, every output line (stdout and stderr) goes to
 * `log` as it arrives, and a failure is a StageError naming the command, how it ended and its last lines.
 */
export function toolShell(stage: string, log: (line: string) => void, opts: ToolOptions = {}): ToolShell {
  const shell = (first: TemplateStringsArray | ToolOptions, ...args: unknown[]) =>
    isTemplate(first) ? run(stage, log, opts, first, args) : toolShell(stage, log, { ...opts, ...first });
  return shell as ToolShell;
}

function isTemplate(x: TemplateStringsArray | ToolOptions): x is TemplateStringsArray {
  return Array.isArray(x);
}

async function run(
  stage: string,
  log: (line: string) => void,
  opts: ToolOptions,
  pieces: TemplateStringsArray,
  args: unknown[],
): Promise<ProcessOutput> {
  const lines = { stdout: lineSplitter(log), stderr: lineSplitter(log) };
  const p = $quiet({
    ...opts,
    nothrow: true,
    // zx hands every chunk of output to its log hook, whether or not it would print it.
    log: (e: LogEntry) => {
      if (e.kind === "stdout" || e.kind === "stderr") lines[e.kind](e.data);
    },
  })(pieces, ...args);
  const out = await p;
  if (out.ok || opts.nothrow) return out;
  throw toolFailure(stage, p.cmd, opts.cwd, out);
}

/** Cuts chunks into whole lines (a chunk may end mid-line or mid-character) and logs the non-blank ones. */
function lineSplitter(log: (line: string) => void): (chunk: Buffer) => void {
  const decoder = new StringDecoder("utf8");
  let partial = "";
  return (chunk) => {
    const text = partial + decoder.write(chunk);
    const lines = text.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) if (line.trim()) log(line);
  };
}

/** The error for a failed command, with what to do next. */
function toolFailure(stage: string, cmd: string, cwd: string | undefined, out: ProcessOutput): StageError {
  const tool = cmd.split(" ")[0];
  let why: string;
  if (out.cause) {
    why = `could not be started (${out.cause.message})${cwd ? `; check that its working directory ${cwd} exists` : ""}`;
  } else if (out.signal) {
    why = `was killed by ${out.signal}`;
  } else if (out.exitCode === 127) {
    why = `exited with 127, command not found: if '${tool}' is missing, install it (scripts/install-prereqs.sh installs every build tool)`;
  } else {
    why = `exited with ${out.exitCode}`;
  }
  const tail = out.stdall
    .split("\n")
    .filter((l) => l.trim())
    .slice(-TAIL_LINES);
  const last = tail.length === 1 ? "its last line" : `its last ${tail.length} lines`;
  const shown = tail.length ? `; ${last} (kuasar-build --verbose streams them all):\n` : "";
  return new StageError(stage, `${cmd} ${why}${shown}${tail.join("\n")}`);
}
