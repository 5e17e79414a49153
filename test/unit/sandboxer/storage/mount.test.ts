import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { bindMount, moveMount, readonlyTree, selfBind, unmount } from "../../../../runtime/sandboxer/storage/mount.ts";

// The share's binds, moves and propagation changes are mount(2) calls through the ns addon; these check that they
// leave what mount(8) left: per-mount flags, read-only tops and propagation, as mountinfo shows them.

let dir: string;

/** mountinfo's entry for mount point p (the topmost): per-mount options and optional fields (propagation). */
async function entry(p: string): Promise<{ options: string[]; propagation: string[] } | undefined> {
  const line = (await readFile("/proc/self/mountinfo", "utf8"))
    .split("\n")
    .filter((l) => l.split(" ")[4] === p)
    .pop();
  if (!line) return undefined;
  const f = line.split(" ");
  return { options: f[5]?.split(",") ?? [], propagation: f.slice(6, f.indexOf("-")) };
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mount-test-"));
  for (const d of ["src", "ro", "self", "from", "to"]) await mkdir(path.join(dir, d));
});

afterEach(async () => {
  for (const m of ["ro", "self", "to", "from", "src"]) await unmount(path.join(dir, m));
  await rm(dir, { recursive: true, force: true });
});

test("a read-only bind keeps the source's nosuid, nodev and noexec, is a slave, and keeps submounts writable", async () => {
  const src = path.join(dir, "src");
  execFileSync("mount", ["-t", "tmpfs", "-o", "nosuid,nodev,noexec,size=1m", "tmpfs", src]);
  // A peer group of its own, as the share's mounts/ is: a bind of a private mount has no master to be a slave of.
  execFileSync("mount", ["--make-shared", src]);
  await mkdir(path.join(src, "sub"));
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", path.join(src, "sub")]);
  const ro = path.join(dir, "ro");
  await bindMount(src, ro, true);
  const top = await entry(ro);
  assert.ok(top, "the bind is mounted");
  for (const o of ["ro", "nosuid", "nodev", "noexec"]) assert.ok(top.options.includes(o), `${o} in ${top.options}`);
  assert.ok(
    top.propagation.some((p) => p.startsWith("master:")),
    `a slave: ${top.propagation}`,
  );
  await assert.rejects(writeFile(path.join(ro, "f"), "x"), /EROFS/);
  // The submount came along (rbind) with its own flags: writable.
  await writeFile(path.join(ro, "sub", "f"), "x");
});

test("rro makes the bind and every submount read-only, and follows no link in the tree to a mount outside it", async () => {
  const src = path.join(dir, "src");
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", src]);
  execFileSync("mount", ["--make-shared", src]);
  await mkdir(path.join(src, "sub"));
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", path.join(src, "sub")]);
  // What a pod could have left in a volume it once wrote: a link to a host mount point.
  const outside = path.join(dir, "from");
  await selfBind(outside, ["private"]);
  await symlink(outside, path.join(src, "escape"));
  const ro = path.join(dir, "ro");
  await bindMount(src, ro, true);
  readonlyTree(ro);
  await assert.rejects(writeFile(path.join(ro, "sub", "f"), "x"), /EROFS/);
  assert.throws(
    () => readonlyTree(path.join(ro, "escape")),
    /making .*escape and the mounts below it read-only: EINVAL/,
  );
  await writeFile(path.join(outside, "f"), "x");
  await writeFile(path.join(src, "sub", "f"), "x");
  assert.ok(!(await entry(outside))?.options.includes("ro"), "the host mount the link names keeps its rw");
});

test("a self bind gets the propagation asked for, in order", async () => {
  const self = path.join(dir, "self");
  await selfBind(self, ["private", "shared"]);
  const e = await entry(self);
  assert.ok(
    e?.propagation.some((p) => p.startsWith("shared:")),
    `shared: ${e?.propagation}`,
  );
  assert.ok(!e?.propagation.some((p) => p.startsWith("master:")), `not a slave: ${e?.propagation}`);
  await unmount(self);
  await selfBind(self, ["private"]);
  assert.deepEqual((await entry(self))?.propagation, [], "private: no optional fields");
});

test("a move takes the mount and its contents to the new place", async () => {
  const from = path.join(dir, "from");
  const to = path.join(dir, "to");
  await selfBind(from, ["private"]);
  await writeFile(path.join(from, "f"), "moved");
  await moveMount(from, to);
  assert.equal(await entry(from), undefined);
  assert.equal(await readFile(path.join(to, "f"), "utf8"), "moved");
});

test("failures name what was being done, on which path, and leave nothing mounted", async () => {
  const missing = path.join(dir, "missing");
  await assert.rejects(bindMount(missing, path.join(dir, "ro"), true), (e: Error) => {
    assert.match(e.message, /bind mount .*missing on .*ro failed: .*ENOENT/);
    return true;
  });
  assert.equal(await entry(path.join(dir, "ro")), undefined);
  await assert.rejects(moveMount(path.join(dir, "src"), path.join(dir, "to")), /moving the mount .*src to .*to failed/);
});
