import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { readFifo } from "../../../testkit/daemon.ts";

// A test whose container never starts must not leave its stdout reader waiting in open() for a writer that will
// never come: that kept a whole test file's process alive until CI's time limit.
let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "fifo-"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("release() ends a read that no writer ever opened", { timeout: 10_000 }, async () => {
  const output = readFifo(path.join(dir, "never"));
  await output.release();
  assert.equal(await output, "");
});

test("what a writer wrote is read to its end; release() afterwards changes nothing", { timeout: 10_000 }, async () => {
  const file = path.join(dir, "written");
  const output = readFifo(file);
  await writeFile(file, "hello\n"); // in the threadpool: a blocking open here would wait for a reader forever
  assert.equal(await output, "hello\n");
  await output.release();
  assert.equal(await output, "hello\n");
});
