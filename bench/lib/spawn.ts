import { spawn } from "node:child_process";

export interface Collected {
  /** Exit code; null when killed by a signal. */
  code: number | null;
  /** stdout and stderr interleaved as they arrived. */
  out: string;
  /** True when `abortOn` matched and the child was killed. */
  aborted: boolean;
}

/** Runs a child to its end, collecting its output; `abortOn` kills it as soon as the output matches. */
export function collect(
  cmd: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; abortOn?: RegExp },
): Promise<Collected> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let aborted = false;
    const onData = (d: Buffer) => {
      out += d;
      if (!aborted && opts.abortOn?.test(out)) {
        aborted = true;
        child.kill("SIGKILL");
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("error", (e) => resolve({ code: null, out: `${out}${e.message}\n`, aborted }));
    child.once("close", (code) => resolve({ code, out, aborted }));
  });
}
