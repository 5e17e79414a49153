import assert from "node:assert/strict";
import { test } from "node:test";
import { spawnDebugShell } from "../../../runtime/task/console.ts";
import * as h from "./harness.ts";

test("debug shell: a pty with a controlling terminal, resize, ^C, exit status", { timeout: 30_000 }, async () => {
  await h.addonsReady();
  const sh = spawnDebugShell("/bin/sh");
  try {
    const out = h.collect(sh.stream);
    sh.resize(100, 30);
    sh.stream.write("echo $((6*7)); stty size\n");
    await h.until("the shell's answers", () => out.text().includes("42") && out.text().includes("30 100"));
    // ^C reaches the foreground job only through a controlling terminal.
    sh.stream.write("sleep 100; echo after-sleep\n");
    await new Promise((r) => setTimeout(r, 300));
    sh.stream.write("\x03");
    // ^C also flushes pending input, so type on only after it was handled.
    await h.until("the ^C echo", () => out.text().includes("^C"), 5000);
    await new Promise((r) => setTimeout(r, 200));
    sh.stream.write("echo interrupted\n");
    await h.until("the interrupted sleep", () => /\ninterrupted/.test(out.text()), 5000);
    assert.ok(!out.text().includes("\r\nafter-sleep"), "^C ended the whole command list");
    sh.stream.write("exit 3\n");
    assert.equal(await sh.exited, 3);
    await out.ended;
  } finally {
    sh.close();
  }
});
