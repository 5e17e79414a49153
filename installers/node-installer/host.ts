import { execFile } from "node:child_process";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and reports how it ended; injectable so tests record the host commands instead of running them. */
export type Runner = (argv: string[]) => Promise<CommandResult>;

export const execRunner: Runner = (argv) =>
  new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve({ code: 0, stdout, stderr });
      const e = err as NodeJS.ErrnoException & { code?: number | string };
      // A string code (ENOENT, EACCES) means the program itself could not be started.
      const code = typeof e.code === "number" ? e.code : 127;
      resolve({ code, stdout, stderr: stderr || e.message });
    });
  });

/**
 * A host program run with the host root as its root directory (chroot semantics, through nsenter so the image
 * ships one helper): the host's own binary with the host's own libraries.
 */
export function inHostRoot(hostRoot: string, argv: string[]): string[] {
  return ["nsenter", `--root=${hostRoot}`, `--wd=${hostRoot}`, "--", ...argv];
}

/** systemctl in the host's mount namespace (needs hostPID); systemctl run in a chroot ignores start/restart. */
export function hostSystemctl(...args: string[]): string[] {
  return ["nsenter", "--target=1", "--mount", "--", "systemctl", ...args];
}

/** Runs argv and returns its stdout, or throws an error naming the command, its exit code and its stderr. */
export async function runChecked(run: Runner, argv: string[], hint: string): Promise<string> {
  const r = await run(argv);
  if (r.code !== 0) {
    const why = (r.stderr || r.stdout).trim().split("\n").slice(-5).join("\n");
    throw new Error(`'${argv.join(" ")}' failed (exit ${r.code})${why ? `: ${why}` : ""}; ${hint}`);
  }
  return r.stdout;
}
