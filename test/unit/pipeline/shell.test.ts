import assert from "node:assert/strict";
import { mkdtemp, realpath, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { $quiet, TAIL_LINES, toolShell } from "../../../pipeline/lib/shell.ts";
import { StageError } from "../../../pipeline/lib/stage-error.ts";

const tmp = await mkdtemp(path.join(os.tmpdir(), "shell-"));
after(() => rm(tmp, { recursive: true, force: true }));

function collecting() {
  const lines: string[] = [];
  return { lines, $: toolShell("demo", (l) => lines.push(l)) };
}

/** A node one-liner as a command: the script is one quoted argument. */
const node = process.execPath;

describe("toolShell", () => {
  it("streams stdout and stderr to the log as whole lines, even when a line arrives in pieces", async () => {
    const { lines, $ } = collecting();
    // Three writes a tick apart: "par" + "tial\nnext" + "\n", plus a stderr line and a blank line to skip.
    const script =
      'process.stdout.write("par"); setTimeout(() => { process.stdout.write("tial\\nnext"); process.stderr.write("warn\\n\\n"); setTimeout(() => process.stdout.write("\\n"), 20); }, 20);';
    const out = await $`${node} -e ${script}`;
    assert.equal(out.stdout, "partial\nnext\n");
    assert.deepEqual([...lines].sort(), ["next", "partial", "warn"]);
    assert.ok(lines.indexOf("partial") < lines.indexOf("next"), "stdout lines keep their order");
  });

  it("quotes interpolated arguments: each is one argument, none is run as shell code", async () => {
    const { $ } = collecting();
    const marker = path.join(tmp, "pwned");
    const args = ["two words", `; touch ${marker}`, `$(touch ${marker})`, "it's", ""];
    const out = await $`${node} -e ${"process.stdout.write(JSON.stringify(process.argv.slice(1)))"} ${args}`;
    assert.deepEqual(JSON.parse(out.stdout), args);
    await assert.rejects(realpath(marker), /ENOENT/);
  });

  it("a failure is a StageError naming the stage, the command, the exit code and the last lines", async () => {
    const { $ } = collecting();
    const script = 'for (let i = 1; i <= 40; i++) console.log("line " + i); process.exit(3)';
    await assert.rejects($`${node} -e ${script}`, (err: Error) => {
      assert.ok(err instanceof StageError);
      assert.equal(err.stage, "demo");
      assert.match(err.message, /^\[demo\] \S*node -e .* exited with 3/);
      assert.match(
        err.message,
        new RegExp(`its last ${TAIL_LINES} lines \\(kuasar-build --verbose streams them all\\)`),
      );
      assert.match(err.message, /\nline 40$/);
      assert.match(err.message, new RegExp(`\\nline ${40 - TAIL_LINES + 1}\\n`));
      assert.doesNotMatch(err.message, new RegExp(`\\nline ${40 - TAIL_LINES}\\n`));
      return true;
    });
  });

  it("a missing tool is named, with how to install the build tools", async () => {
    const { $ } = collecting();
    await assert.rejects($`kuasar-no-such-tool --version`, (err: Error) => {
      assert.match(err.message, /kuasar-no-such-tool --version exited with 127, command not found/);
      assert.match(err.message, /if 'kuasar-no-such-tool' is missing, install it \(scripts\/install-prereqs\.sh/);
      assert.match(err.message, /kuasar-no-such-tool: command not found/);
      return true;
    });
  });

  it("runs in the given working directory; a missing one is named", async () => {
    const { $ } = collecting();
    assert.equal((await $({ cwd: tmp })`pwd`).stdout.trim(), await realpath(tmp));
    const gone = path.join(tmp, "gone");
    await assert.rejects($({ cwd: gone })`true`, (err: Error) => {
      assert.match(err.message, new RegExp(`could not be started .*check that its working directory ${gone} exists`));
      return true;
    });
  });

  it("env replaces the environment, and options given in two steps both apply", async () => {
    const { $ } = collecting();
    process.env.KUASAR_SHELL_TEST_LEAK = "leaked";
    try {
      const out = await $({ env: { PATH: process.env.PATH, ONLY: "this" } })({ cwd: tmp })`env`;
      const vars = out.stdout.split("\n");
      assert.ok(vars.includes("ONLY=this"));
      assert.ok(!vars.some((v) => v.startsWith("KUASAR_SHELL_TEST_LEAK=")), "the builder's environment is not passed");
      assert.ok(vars.includes(`PWD=${tmp}`), "the working directory applies too");
    } finally {
      delete process.env.KUASAR_SHELL_TEST_LEAK;
    }
  });

  it("nothrow returns the failed run instead of throwing", async () => {
    const { $ } = collecting();
    const out = await $({ nothrow: true })`${node} -e ${'console.error("bad"); process.exit(2)'}`;
    assert.equal(out.exitCode, 2);
    assert.equal(out.stderr, "bad\n");
  });

  it("gives tools no stdin, so one that reads it ends instead of waiting", async () => {
    const { $ } = collecting();
    // A pipe would be left open by zx's default stdio; /dev/null is a character device, never a FIFO.
    assert.equal((await $({ nothrow: true })`test -p /dev/stdin`).exitCode, 1);
    assert.equal((await $quiet({ nothrow: true })`test -p /dev/stdin`).exitCode, 1);
    assert.equal((await $quiet`test -c /dev/stdin`).exitCode, 0);
  });
});
