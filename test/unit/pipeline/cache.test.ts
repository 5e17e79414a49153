import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, truncate, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { Cache } from "../../../pipeline/lib/cache.ts";

let root: string;
let cache: Cache;
let builds: number;
const build = async (out: string) => {
  builds++;
  await writeFile(path.join(out, "artifact.bin"), "x".repeat(4096));
};

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "cache-"));
  cache = new Cache(root);
  builds = 0;
});
afterEach(() => rm(root, { recursive: true, force: true }));

test("a stored entry is a hit until its key changes", async () => {
  const dir = await cache.store("s", "k1", build);
  assert.equal(await readFile(path.join(dir, "artifact.bin"), "utf8"), "x".repeat(4096));
  assert.deepEqual(await cache.lookup("s", "k1"), { hit: true, dir });
  assert.deepEqual(await cache.lookup("s", "k1"), { hit: true, dir });
  assert.equal((await cache.lookup("s", "k2")).hit, false);
  assert.equal(builds, 1);
});

test("a truncated artifact is detected", async () => {
  const dir = await cache.store("s", "k", build);
  await cache.lookup("s", "k");
  await truncate(path.join(dir, "artifact.bin"), 100);
  assert.deepEqual(await cache.lookup("s", "k"), { hit: false, reason: "cached artifact.bin is missing or truncated" });
});

test("same-size corruption is detected even when the mtime is put back", async () => {
  const dir = await cache.store("s", "k", build);
  await cache.lookup("s", "k");
  const file = path.join(dir, "artifact.bin");
  const before = await stat(file);
  await writeFile(file, "y".repeat(4096));
  await utimes(file, before.atime, before.mtime);
  assert.deepEqual(await cache.lookup("s", "k"), { hit: false, reason: "cached artifact.bin has a wrong digest" });
});

test("a build that fails leaves no entry behind", async () => {
  await assert.rejects(
    cache.store("s", "k", async () => {
      throw new Error("compiler exploded");
    }),
    /compiler exploded/,
  );
  assert.deepEqual(await cache.lookup("s", "k"), { hit: false, reason: "not built yet" });
});

test("a build killed mid-way leaves its scratch tree only until the next build of that stage", async () => {
  const dead = spawnSync("true").pid;
  const abandoned = path.join(root, "s", `.tmp-0123456789abcdef-${dead}-0a0b0c0d`);
  const running = path.join(root, "s", ".tmp-0123456789abcdef-1-0a0b0c0d");
  await mkdir(path.join(abandoned, "out/linux-6.1"), { recursive: true });
  await mkdir(running, { recursive: true });
  await cache.store("s", "k2", build);
  assert.equal(existsSync(abandoned), false, "the dead build's tree is removed");
  assert.equal(existsSync(running), true, "a live process's build is left alone");
});
