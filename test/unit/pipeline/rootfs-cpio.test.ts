import assert from "node:assert/strict";
import { chmod, lstat, mkdir, readFile, readlink, rm, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { sha256 } from "../../../pipeline/lib/hash.ts";
import { $quiet } from "../../../pipeline/lib/shell.ts";
import { extractNewc, readNewc, writeNewc } from "../../../pipeline/rootfs/cpio.ts";
import { listTree } from "../../../pipeline/rootfs/tree.ts";
import { tmpdir } from "./rootfs-fixture.ts";

/** A small tree with every kind of entry, odd sizes (padding) and a sticky directory. */
async function makeTree(root: string, mtime: number): Promise<void> {
  await mkdir(path.join(root, "bin"), { recursive: true });
  await mkdir(path.join(root, "tmp"));
  await mkdir(path.join(root, "a-b"));
  await mkdir(path.join(root, "a/b"), { recursive: true });
  await writeFile(path.join(root, "bin/tool"), "#!/bin/sh\necho hi\n");
  await writeFile(path.join(root, "a/b/three"), "abc");
  await writeFile(path.join(root, "a/empty"), "");
  await writeFile(path.join(root, "a-b/big"), Buffer.alloc(3 * 1048576 + 5, 7));
  await symlink("/bin/tool", path.join(root, "a/link"));
  await chmod(path.join(root, "bin/tool"), 0o755);
  await chmod(path.join(root, "tmp"), 0o1777);
  for (const p of ["bin/tool", "a/b/three", "a", "tmp"]) await utimes(path.join(root, p), mtime, mtime);
}

describe("newc writer", () => {
  let dir: string;
  before(async () => {
    dir = await tmpdir("cpio");
    await makeTree(path.join(dir, "one"), 1);
    await makeTree(path.join(dir, "two"), 2_000_000_000);
    for (const t of ["one", "two"]) {
      const root = path.join(dir, t);
      await writeNewc(root, await listTree(root), path.join(dir, `${t}.cpio`), 1700000000);
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("is bit-identical for the same tree, whatever the files' own times", async () => {
    const [a, b] = await Promise.all(["one", "two"].map((t) => readFile(path.join(dir, `${t}.cpio`))));
    assert.equal(sha256(a!), sha256(b!));
  });

  it("is listed by cpio -it in byte order of the paths, parents first", async () => {
    const list = (await $quiet`cpio -it --quiet -F ${path.join(dir, "one.cpio")}`).stdout.trimEnd().split("\n");
    assert.deepEqual(list, ["a", "a-b", "a-b/big", "a/b", "a/b/three", "a/empty", "a/link", "bin", "bin/tool", "tmp"]);
  });

  it("records root ownership, the fixed mtime, modes and link targets (cpio -itv)", async () => {
    const out = (
      await $quiet({ env: { ...process.env, TZ: "UTC" } })`cpio -itv --quiet -F ${path.join(dir, "one.cpio")}`
    ).stdout;
    const line = (name: string) =>
      out.split("\n").find((l) => l.endsWith(` ${name}`) || l.includes(` ${name} -> `)) ?? "";
    assert.match(line("bin/tool"), /^-rwxr-xr-x\s+1 root\s+root\s+18 Nov 14\s+2023 bin\/tool$/);
    assert.match(line("tmp"), /^drwxrwxrwt/);
    assert.match(line("a/link"), /^lrwxrwxrwx .* a\/link -> \/bin\/tool$/);
  });

  it("extracts with GNU cpio to the same content", async () => {
    const x = path.join(dir, "x");
    await mkdir(x);
    await $quiet({ cwd: x })`cpio -idm --quiet -F ${path.join(dir, "one.cpio")}`;
    assert.equal(await readFile(path.join(x, "a/b/three"), "utf8"), "abc");
    assert.equal((await readFile(path.join(x, "a-b/big"))).length, 3 * 1048576 + 5);
    assert.equal(await readlink(path.join(x, "a/link")), "/bin/tool");
  });

  it("reads back and extracts with its own reader, modes exact despite the umask", async () => {
    const entries = await readNewc(path.join(dir, "one.cpio"));
    assert.equal(entries.length, 10);
    assert.deepEqual(entries.find((e) => e.name === "a/link")?.target, "/bin/tool");
    const y = path.join(dir, "y");
    await mkdir(y);
    const old = process.umask(0o077);
    try {
      await extractNewc(path.join(dir, "one.cpio"), y);
    } finally {
      process.umask(old);
    }
    assert.equal((await lstat(path.join(y, "tmp"))).mode & 0o7777, 0o1777);
    assert.equal((await lstat(path.join(y, "bin/tool"))).mode & 0o7777, 0o755);
    assert.equal((await lstat(path.join(y, "a/b/three"))).mode & 0o7777, 0o644);
    assert.equal((await lstat(path.join(y, "a"))).mode & 0o7777, 0o755);
    assert.deepEqual(await readFile(path.join(y, "a-b/big")), await readFile(path.join(dir, "one/a-b/big")));
  });

  it("refuses an archive entry that escapes the destination", async () => {
    const evil = path.join(dir, "evil.cpio");
    await writeNewc(dir, [{ path: "../escaped", type: "symlink", mode: 0o777, size: 1, target: "x" }], evil, 0);
    const z = path.join(dir, "z");
    await mkdir(z);
    await assert.rejects(extractNewc(evil, z), /\.\.\/escaped points outside the archive/);
  });
});
