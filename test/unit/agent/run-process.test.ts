import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { failure, MAX_CAPTURE, runProcess } from "../../../runtime/agent/run-process.ts";

test("output is captured apart and together, input reaches stdin, the exit status comes back", async () => {
  const r = await runProcess("sh", ["-c", "cat; echo err >&2; exit 3"], { input: "in\n" });
  assert.equal(r.stdout, "in\n");
  assert.equal(r.stderr, "err\n");
  assert.equal(r.all, "in\nerr\n");
  assert.equal(r.exitCode, 3);
  assert.equal(r.failed, true);
  assert.equal(failure(r), "exit status 3: err");
  const ok = await runProcess("true", []);
  assert.deepEqual([ok.failed, ok.exitCode, ok.stdout], [false, 0, ""]);
});

test("stdio can be fds the caller holds (runc's container stdio)", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-run-"));
  try {
    const fd = openSync(path.join(dir, "out"), "w");
    const r = await runProcess("sh", ["-c", "echo to-fd; echo to-fd-err >&2"], { stdout: fd, stderr: fd });
    closeSync(fd);
    assert.equal(r.failed, false);
    assert.equal(r.all, "", "nothing was piped");
    assert.equal(readFileSync(path.join(dir, "out"), "utf8"), "to-fd\nto-fd-err\n");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a missing program, a timeout and a signal each say what happened", async () => {
  const missing = await runProcess("/nonexistent/prog", []);
  assert.equal(missing.failed, true);
  assert.equal(missing.spawnError?.code, "ENOENT");
  assert.equal(missing.exitCode, null);
  assert.match(failure(missing), /ENOENT/);

  // A child that ignores SIGTERM is killed after killAfterMs.
  const t0 = Date.now();
  const slow = await runProcess("sh", ["-c", "trap '' TERM; sleep 30"], { timeoutMs: 100, killAfterMs: 200 });
  assert.equal(slow.timedOut, true);
  assert.equal(slow.signal, "SIGKILL");
  assert.ok(Date.now() - t0 < 10_000);
  assert.equal(failure(slow), "timed out");

  const killed = await runProcess("sh", ["-c", "kill -KILL $$"]);
  assert.equal(failure(killed), "killed by SIGKILL");
});

test("attack: a helper that floods its output is cut at MAX_CAPTURE, and one that never reads its input still ends", async () => {
  const flood = await runProcess("sh", ["-c", `head -c ${MAX_CAPTURE + 4096} /dev/zero`]);
  assert.equal(flood.stdout.length, MAX_CAPTURE);
  assert.equal(flood.all.length, MAX_CAPTURE);
  const deaf = await runProcess("true", [], { input: Buffer.alloc(8 << 20) });
  assert.equal(deaf.failed, false);
  // A background child keeps the pipe open after the helper exited: the run ends anyway, with what was printed.
  const t0 = Date.now();
  const left = await runProcess("sh", ["-c", "sleep 30 & echo hi"]);
  assert.deepEqual([left.failed, left.stdout], [false, "hi\n"]);
  assert.ok(Date.now() - t0 < 10_000);
});
