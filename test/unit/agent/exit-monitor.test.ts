import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { decodeWaitStatus, ExitMonitor } from "../../../runtime/agent/exit-monitor.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const agent = path.join(repo, "test/unit/native/fixtures/agent.ts");

function monitor(opts?: ConstructorParameters<typeof ExitMonitor>[1]): { feed: PassThrough; m: ExitMonitor } {
  const feed = new PassThrough();
  return { feed, m: new ExitMonitor(feed, opts) };
}

// Lets the PassThrough deliver what was written.
const flush = () => new Promise((r) => setImmediate(r));

describe("decodeWaitStatus", () => {
  test("exit codes, and 128 + signal for signal deaths as containerd reports them", () => {
    assert.deepEqual(decodeWaitStatus(0), { exitStatus: 0 });
    assert.deepEqual(decodeWaitStatus(7 << 8), { exitStatus: 7 });
    assert.deepEqual(decodeWaitStatus(255 << 8), { exitStatus: 255 });
    assert.deepEqual(decodeWaitStatus(9), { exitStatus: 137, signal: "SIGKILL", coreDumped: false });
    assert.deepEqual(decodeWaitStatus(15), { exitStatus: 143, signal: "SIGTERM", coreDumped: false });
    assert.deepEqual(decodeWaitStatus(0x80 | 11), { exitStatus: 139, signal: "SIGSEGV", coreDumped: true });
    assert.throws(() => decodeWaitStatus((19 << 8) | 0x7f), /stopped process/);
  });
});

describe("ExitMonitor", () => {
  test("resolves a wait whether the report came before or after it, across chunk boundaries", async () => {
    const { feed, m } = monitor();
    feed.write("100 256\n20");
    await flush();
    assert.equal(m.unclaimedCount, 1);
    assert.equal((await m.waitExit(100)).exitStatus, 1);
    assert.equal(m.unclaimedCount, 0);
    const later = m.waitExit(200);
    feed.write("0 9\n");
    const info = await later;
    assert.equal(info.pid, 200);
    assert.equal(info.exitStatus, 137);
    assert.equal(info.signal, "SIGKILL");
    assert.ok(info.exitedAt instanceof Date);
  });

  test("all waiters for a pid get the exit; a claimed exit is not handed out again", async () => {
    const { feed, m } = monitor();
    const a = m.waitExit(5);
    const b = m.waitExit(5);
    feed.write("5 768\n");
    assert.equal((await a).exitStatus, 3);
    assert.equal((await b).exitStatus, 3);
    const again = m.waitExit(5);
    feed.write("5 1024\n");
    assert.equal((await again).exitStatus, 4);
  });

  test("after: a report older than the mark (a reused pid's predecessor) is not taken for the new process", async () => {
    const { feed, m } = monitor();
    feed.write("42 256\n");
    await flush();
    const mark = m.mark();
    const next = m.waitExit(42, { after: mark });
    feed.write("42 512\n");
    assert.equal((await next).exitStatus, 2);
  });

  test("unclaimed exits are bounded (oldest dropped) and aged out", async () => {
    const { feed, m } = monitor({ maxUnclaimed: 3, maxAgeMs: 50 });
    feed.write("1 0\n2 0\n3 0\n4 0\n");
    await flush();
    assert.equal(m.unclaimedCount, 3);
    const first = m.waitExit(1);
    assert.equal((await m.waitExit(4)).pid, 4);
    await new Promise((r) => setTimeout(r, 80));
    feed.write("9 0\n");
    await flush();
    assert.equal(m.unclaimedCount, 1, "2 and 3 should have aged out");
    m.close();
    await assert.rejects(first, /pid 1: the exit monitor was closed/);
  });

  test("waits reject once init's pipe ends; malformed lines are reported as warnings", async () => {
    const { feed, m } = monitor();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    const pending = m.waitExit(77);
    feed.end("garbage\n");
    await assert.rejects(pending, /pid 77: init closed the exit report pipe/);
    await assert.rejects(m.waitExit(78), /pid 78: init closed/);
    await flush();
    process.off("warning", onWarning);
    assert.ok(
      warnings.some((w) => w.includes('malformed report from init: "garbage"')),
      warnings.join("; "),
    );
  });

  test("fromInit() refuses an fd 3 that is not init's pipe instead of waiting on it", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "exit-monitor-"));
    try {
      const file = openSync(path.join(dir, "not-a-pipe"), "w");
      const out = execFileSync(process.execPath, ["--import", "tsx", agent, "monitor"], {
        cwd: repo,
        encoding: "utf8",
        env: { ...process.env, KUASAR_INIT_EXIT_FD: "3" },
        stdio: ["ignore", "pipe", "pipe", file],
      });
      assert.match(out, /fd 3 is not the pipe from init/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
