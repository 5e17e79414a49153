import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { leaseTree } from "../../../pipeline/kernel/tree.ts";

let base: string;
let dir: string;
before(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "kernel-tree-"));
  dir = path.join(base, "tree");
});
after(() => rm(base, { recursive: true, force: true }));

/** One whole build: prepare a source root with a marker file, compile, finish. */
async function build(key: string, marker: string): Promise<{ reused: boolean; found: string | undefined }> {
  const lease = (await leaseTree(dir, key))!;
  assert.ok(lease, "the tree is free");
  const reused = lease.srcDir !== undefined;
  const srcDir = lease.srcDir ?? path.join(lease.dir, "src", "linux");
  const found = await readFile(path.join(srcDir, "marker"), "utf8").catch(() => undefined);
  if (!reused) {
    await mkdir(srcDir, { recursive: true });
    await lease.prepared(srcDir);
  }
  await lease.compiling();
  await writeFile(path.join(srcDir, "marker"), marker);
  await lease.done();
  await lease.release();
  return { reused, found };
}

test("a finished tree is reused for the same key, with what the last build left in it", async () => {
  assert.deepEqual(await build("k1", "first"), { reused: false, found: undefined });
  assert.deepEqual(await build("k1", "second"), { reused: true, found: "first" });
});

test("another key (new source, patches or toolchain) starts from an empty tree", async () => {
  await build("k1", "one");
  assert.deepEqual(await build("k2", "two"), { reused: false, found: undefined });
});

test("a build that stopped inside make is not trusted: the next one starts over", async () => {
  await build("k3", "done");
  const lease = (await leaseTree(dir, "k3"))!;
  await lease.compiling();
  await lease.release(); // failed or killed before done()
  assert.deepEqual(await build("k3", "again"), { reused: false, found: undefined });
});

test("a tree held by a live build is not shared; a dead holder's lock is taken over", async () => {
  const held = (await leaseTree(dir, "k4"))!;
  assert.equal(await leaseTree(dir, "k4"), undefined, "held by this (live) process");
  await held.release();

  // a lock left by a process that no longer exists
  const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
  await mkdir(`${dir}.lock`, { recursive: true });
  await writeFile(path.join(`${dir}.lock`, "pid"), dead);
  const taken = await leaseTree(dir, "k4");
  assert.ok(taken);
  await taken.release();
  assert.equal(existsSync(`${dir}.lock`), false);

  // a lock without a pid is only taken over once it is old
  await mkdir(`${dir}.lock`);
  assert.equal(await leaseTree(dir, "k4"), undefined);
  const old = new Date(Date.now() - 120_000);
  await utimes(`${dir}.lock`, old, old);
  const late = await leaseTree(dir, "k4");
  assert.ok(late);
  await late.release();
});
