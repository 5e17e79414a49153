import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { cpuSeconds, isRunning, memoryBytes } from "../../../../runtime/sandboxer/metrics/process-stats.ts";

let proc: string;
before(async () => {
  proc = await mkdtemp(path.join(os.tmpdir(), "proc-"));
});
after(async () => {
  await rm(proc, { recursive: true, force: true });
});

/** A fake /proc/<pid> with the given stat and smaps_rollup. */
async function fakeProc(pid: number, stat: string, smaps: string): Promise<void> {
  await mkdir(path.join(proc, String(pid)));
  await writeFile(path.join(proc, String(pid), "stat"), stat);
  await writeFile(path.join(proc, String(pid), "smaps_rollup"), smaps);
}

/** stat(5) from field 3 on, with utime and stime (fields 14 and 15) set. */
const statTail = (state: string, utime: number, stime: number) =>
  [state, ...Array(10).fill("0"), utime, stime, ...Array(37).fill("0")].join(" ");

test("this process: its CPU time and memory, as /proc reports them", async () => {
  const until = performance.now() + 50;
  while (performance.now() < until); // at least a few ticks of CPU
  const cpu = await cpuSeconds(process.pid);
  assert.ok(cpu !== undefined && cpu >= 0.03, `cpu ${cpu} s`);
  assert.ok(cpu <= process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6 + 0.02, `cpu ${cpu} s`);
  const mem = await memoryBytes(process.pid);
  assert.ok(mem, "smaps_rollup of this process");
  const rss = process.memoryUsage().rss;
  assert.ok(mem.rss > rss / 2 && mem.rss < rss * 2, `rss ${mem.rss} vs process.memoryUsage ${rss}`);
  assert.ok(mem.pss > 0 && mem.pss <= mem.rss, `pss ${mem.pss}, rss ${mem.rss}`);
  assert.equal(await isRunning(process.pid), true);
});

test("a process that has exited: nothing, and no error", async () => {
  const child = spawn("true");
  const pid = child.pid!;
  await new Promise((r) => child.once("exit", r));
  await new Promise((r) => setTimeout(r, 50)); // reaped
  assert.equal(await cpuSeconds(pid), undefined);
  assert.equal(await memoryBytes(pid), undefined);
  assert.equal(await isRunning(pid), false);
});

test("a zombie and an exiting process (empty smaps_rollup) count as exited", async () => {
  await fakeProc(101, `101 (qemu) ${statTail("Z", 500, 20)}\n`, "");
  assert.equal(await cpuSeconds(101, proc), undefined);
  assert.equal(await isRunning(101, proc), false);
  assert.equal(await memoryBytes(101, proc), undefined);
});

test("a command name with spaces and parentheses does not shift the fields", async () => {
  await fakeProc(
    102,
    `102 (qemu) S 1 2 (x) ${statTail("R", 250, 50)}\n`,
    "00400000-7fff ---p 00000000 00:00 0  [rollup]\nRss:  2048 kB\nPss:  1024 kB\nPss_Anon:  512 kB\n",
  );
  assert.equal(await cpuSeconds(102, proc), 3);
  assert.deepEqual(await memoryBytes(102, proc), { rss: 2048 * 1024, pss: 1024 * 1024 });
  assert.equal(await isRunning(102, proc), true);
});
