import assert from "node:assert/strict";
import { copyFile, mkdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { $quiet } from "../../../pipeline/lib/shell.ts";
import { checkElfClosure, lddClosure, readElf, resolveInRoot } from "../../../pipeline/rootfs/elf.ts";
import { cc, fakeTaskOutput, tmpdir } from "./rootfs-fixture.ts";

/** readelf's view, to check the in-process parser against. */
async function readelf(file: string) {
  const out = (await $quiet`readelf -W -d -l ${file}`).stdout;
  const all = (tag: string) => [...out.matchAll(new RegExp(`\\(${tag}\\)[^[]*\\[(.*)\\]`, "g"))].map((m) => m[1]);
  return {
    interpreter: /Requesting program interpreter: (.+)\]/.exec(out)?.[1],
    needed: all("NEEDED"),
    soname: all("SONAME")[0],
    runpath: all("RUNPATH").flatMap((v) => (v ?? "").split(":")),
  };
}

describe("readElf", () => {
  for (const file of ["/usr/bin/node", "/usr/sbin/runc", "/bin/busybox", "/lib/x86_64-linux-gnu/libc.so.6"]) {
    it(`agrees with readelf -d -l on ${file}`, async () => {
      const mine = await readElf(file);
      const theirs = await readelf(file);
      assert.equal(mine.interpreter, theirs.interpreter);
      assert.deepEqual(mine.needed, theirs.needed);
      assert.equal(mine.soname, theirs.soname);
      assert.deepEqual(mine.runpath, theirs.runpath);
    });
  }

  it("rejects a file that is not ELF", async () => {
    await assert.rejects(readElf("/etc/hostname"), /is not an ELF file/);
  });
});

describe("lddClosure", () => {
  it("gives node's libraries and the loader, and nothing for static busybox", async () => {
    const libs = (await lddClosure(["/usr/bin/node"])).map((l) => path.basename(l.path));
    for (const l of ["libstdc++.so.6", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2"]) {
      assert.ok(libs.includes(l), `${l} missing from ${libs.join(", ")}`);
    }
    assert.deepEqual(await lddClosure(["/bin/busybox"]), []);
  });

  it("resolves a shared object without an interpreter (an addon) through ldd", async () => {
    const dir = await tmpdir("addon");
    try {
      const task = await fakeTaskOutput(dir);
      const libs = (await lddClosure([path.join(task, "vsock.node")])).map((l) => l.path);
      assert.deepEqual(libs, ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("names the ELF and the library the host cannot resolve", async () => {
    const dir = await tmpdir("ldd");
    try {
      await writeFile(path.join(dir, "lib.c"), "int kuasar_probe(void) { return 1; }\n");
      await writeFile(path.join(dir, "main.c"), "int kuasar_probe(void);\nint main(void) { return kuasar_probe(); }\n");
      await cc(["-shared", "-fPIC", "-o", path.join(dir, "libkuasarprobe.so"), path.join(dir, "lib.c")]);
      await cc(["-o", path.join(dir, "probe"), path.join(dir, "main.c"), `-L${dir}`, "-lkuasarprobe"]);
      await rm(path.join(dir, "libkuasarprobe.so"));
      await assert.rejects(lddClosure([path.join(dir, "probe")]), (err: Error) => {
        assert.match(err.message, /probe needs libkuasarprobe\.so/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("resolveInRoot", () => {
  let root: string;
  before(async () => {
    root = await tmpdir("resolve");
    await mkdir(path.join(root, "usr/lib"), { recursive: true });
    await writeFile(path.join(root, "usr/lib/libx.so.1.2"), "x");
    await symlink("libx.so.1.2", path.join(root, "usr/lib/libx.so.1"));
    await symlink("/usr/lib", path.join(root, "lib"));
    await symlink("/nowhere", path.join(root, "dangling"));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("follows relative and absolute links without leaving the root", async () => {
    assert.equal(await resolveInRoot(root, "/lib/libx.so.1"), path.join(root, "usr/lib/libx.so.1.2"));
    assert.equal(await resolveInRoot(root, "/usr/lib/../lib/libx.so.1"), path.join(root, "usr/lib/libx.so.1.2"));
  });

  it("finds nothing where nothing is", async () => {
    assert.equal(await resolveInRoot(root, "/dangling"), undefined);
    assert.equal(await resolveInRoot(root, "/usr/lib"), undefined, "a directory is not a library");
    assert.equal(await resolveInRoot(root, "/usr/lib/libx.so.1.2/x"), undefined);
  });
});

describe("checkElfClosure", () => {
  let root: string;
  const dirs = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"];
  before(async () => {
    root = await tmpdir("closure");
    const place = async (host: string, guest: string) => {
      await mkdir(path.join(root, path.dirname(guest)), { recursive: true });
      await copyFile(host, path.join(root, guest));
    };
    await place("/usr/sbin/runc", "usr/sbin/runc");
    for (const l of await lddClosure(["/usr/sbin/runc"])) await place(l.path, l.path);
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("accepts runc with its closure (libc's NEEDED ld-linux is the loader itself)", async () => {
    const elfs = ["usr/sbin/runc", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libseccomp.so.2"];
    assert.deepEqual(await checkElfClosure(root, elfs, dirs), []);
  });

  it("names the ELF and the library when one is missing", async () => {
    await rm(path.join(root, "lib/x86_64-linux-gnu/libseccomp.so.2"));
    const problems = await checkElfClosure(root, ["usr/sbin/runc"], dirs);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.elf, "usr/sbin/runc");
    assert.equal(problems[0]?.missing, "libseccomp.so.2");
    assert.deepEqual(problems[0]?.searched, dirs);
  });

  it("names a missing interpreter", async () => {
    await rm(path.join(root, "lib64/ld-linux-x86-64.so.2"));
    const problems = await checkElfClosure(root, ["usr/sbin/runc"], dirs);
    assert.ok(problems.some((p) => p.elf === "usr/sbin/runc" && p.missing === "/lib64/ld-linux-x86-64.so.2"));
  });

  it("searches $ORIGIN in RUNPATH", async () => {
    const dir = await tmpdir("origin");
    try {
      await writeFile(path.join(dir, "lib.c"), "int kuasar_probe(void) { return 1; }\n");
      await writeFile(path.join(dir, "main.c"), "int kuasar_probe(void);\nint main(void) { return kuasar_probe(); }\n");
      const r = path.join(dir, "root");
      await mkdir(path.join(r, "opt/probe/lib"), { recursive: true });
      await cc(["-shared", "-fPIC", "-o", path.join(r, "opt/probe/lib/libkuasarprobe.so"), path.join(dir, "lib.c")]);
      await cc([
        "-o",
        path.join(r, "opt/probe/probe"),
        path.join(dir, "main.c"),
        `-L${path.join(r, "opt/probe/lib")}`,
        "-lkuasarprobe",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib",
      ]);
      for (const l of ["/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"]) {
        await mkdir(path.join(r, path.dirname(l)), { recursive: true });
        await copyFile(l, path.join(r, l));
      }
      assert.deepEqual(await checkElfClosure(r, ["opt/probe/probe"], dirs), []);
      await rm(path.join(r, "opt/probe/lib/libkuasarprobe.so"));
      const problems = await checkElfClosure(r, ["opt/probe/probe"], dirs);
      assert.deepEqual(problems[0]?.searched, ["/opt/probe/lib", ...dirs]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
