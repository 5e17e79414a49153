import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { $quiet, toolShell } from "../../../pipeline/lib/shell.ts";
import { type BuildContext, type BuildOptions, DigestMemo, keyContext } from "../../../pipeline/lib/stage.ts";

export const repo = path.resolve(import.meta.dirname, "../../..");

export const options: BuildOptions = {
  profile: "micro",
  hypervisors: ["qemu"],
  kernelPatches: [],
  sourceDateEpoch: 1700000000,
  verbose: false,
};

export async function tmpdir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `kuasar-test-${prefix}-`));
}

export async function cc(args: string[]): Promise<void> {
  const r = await $quiet({ nothrow: true })`cc ${args}`;
  if (r.exitCode === 127) throw new Error("cc is missing; install it with: apt-get install -y build-essential");
  if (r.exitCode !== 0) throw new Error(`cc ${args.join(" ")} failed:\n${r.stdall}`);
}

/**
 * What the task stage outputs, in miniature: a static C init, a real (empty) N-API addon, a one-line bundle.
 * Built with cc and node's headers (/usr/include/node), as the real ones are.
 */
export async function fakeTaskOutput(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const src = await tmpdir("src");
  try {
    await writeFile(path.join(src, "init.c"), "int main(void) { return 0; }\n");
    // getpid() makes libc a NEEDED library, as in the real addon (an object without an interpreter).
    await writeFile(
      path.join(src, "addon.c"),
      "#include <unistd.h>\n#include <node_api.h>\nNAPI_MODULE_INIT() { return getpid() > 0 ? exports : NULL; }\n",
    );
    await cc(["-O2", "-static", "-o", path.join(dir, "init"), path.join(src, "init.c")]);
    await cc([
      "-O2",
      "-shared",
      "-fPIC",
      "-I/usr/include/node",
      "-o",
      path.join(dir, "vsock.node"),
      path.join(src, "addon.c"),
    ]);
    await writeFile(path.join(dir, "vmm-task.js"), 'console.log("vmm-task");\n');
  } finally {
    await rm(src, { recursive: true, force: true });
  }
  return dir;
}

/** A BuildContext outside the runner, for driving one stage's build directly; logs are collected. */
export async function buildContext(
  out: string,
  deps: Record<string, string>,
): Promise<BuildContext & { lines: string[] }> {
  const memo = new DigestMemo(path.join(out, "..", "digests.json"));
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  await mkdir(out, { recursive: true });
  return {
    ...keyContext(repo, options, memo),
    out,
    keepDir: path.join(out, "..", "keep"),
    lines,
    dep: (name) => {
      const d = deps[name];
      if (!d) throw new Error(`no dep ${name}`);
      return d;
    },
    log,
    $: toolShell("test", log),
  };
}
