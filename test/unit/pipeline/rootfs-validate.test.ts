import assert from "node:assert/strict";
import { copyFile, mkdir, rm, symlink, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { hashFile } from "../../../pipeline/lib/hash.ts";
import { StageError } from "../../../pipeline/lib/stage-error.ts";
import { lddClosure } from "../../../pipeline/rootfs/elf.ts";
import { listTree } from "../../../pipeline/rootfs/tree.ts";
import { RootfsValidationError, validateRootfs } from "../../../pipeline/rootfs/validate.ts";
import { rootfsStage } from "../../../pipeline/stages/rootfs.ts";
import { buildContext, cc, fakeTaskOutput, tmpdir } from "./rootfs-fixture.ts";

describe("rootfs validation gates", () => {
  let dir: string;
  let task: string;
  let root: string;
  let initSha: string;

  before(async () => {
    dir = await tmpdir("validate");
    task = await fakeTaskOutput(path.join(dir, "task"));
    initSha = await hashFile(path.join(task, "init"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** A minimal valid root: the agent's files plus runc and its closure. */
  beforeEach(async () => {
    root = path.join(dir, "root");
    await rm(root, { recursive: true, force: true });
    const place = async (host: string, guest: string) => {
      await mkdir(path.join(root, path.dirname(guest)), { recursive: true });
      await copyFile(host, path.join(root, guest));
    };
    await place(path.join(task, "init"), "sbin/init");
    await symlink("/sbin/init", path.join(root, "init"));
    await place(path.join(task, "vmm-task.js"), "usr/lib/vmm-task/vmm-task.js");
    await place(path.join(task, "vsock.node"), "usr/lib/vmm-task/vsock.node");
    await place("/usr/sbin/runc", "usr/sbin/runc");
    for (const l of await lddClosure(["/usr/sbin/runc"])) await place(l.path, l.path);
  });

  const problems = async (): Promise<string[]> => {
    try {
      await validateRootfs(root, await listTree(root), initSha);
      return [];
    } catch (err) {
      assert.ok(err instanceof RootfsValidationError, String(err));
      return err.problems;
    }
  };

  it("passes a complete root", async () => {
    assert.deepEqual(await problems(), []);
  });

  it("names the ELF and the library when a library is missing", async () => {
    await unlink(path.join(root, "lib/x86_64-linux-gnu/libseccomp.so.2"));
    const p = await problems();
    assert.equal(p.length, 1);
    assert.match(
      p[0]!,
      /^\/usr\/sbin\/runc needs libseccomp\.so\.2, which is not in the rootfs \(searched \/lib\/x86_64-linux-gnu, /,
    );
  });

  it("says so when /sbin/init is missing", async () => {
    await unlink(path.join(root, "sbin/init"));
    const p = await problems();
    assert.ok(
      p.some((l) => /^\/sbin\/init is missing or not a regular file/.test(l)),
      p.join("\n"),
    );
  });

  it("says so when /sbin/init is not the agent's init", async () => {
    await unlink(path.join(root, "sbin/init"));
    await symlink("/bin/busybox", path.join(root, "sbin/init"));
    assert.ok((await problems()).some((l) => l.includes("/sbin/init is missing or not a regular file")));
    await unlink(path.join(root, "sbin/init"));
    await copyFile("/bin/busybox", path.join(root, "sbin/init"));
    assert.ok((await problems()).some((l) => l.includes("/sbin/init is not the agent's init")));
  });

  it("requires /init -> /sbin/init, the bundle and the addon", async () => {
    await unlink(path.join(root, "init"));
    await writeFile(path.join(root, "usr/lib/vmm-task/vmm-task.js"), "");
    await unlink(path.join(root, "usr/lib/vmm-task/vsock.node"));
    const p = await problems();
    assert.ok(
      p.some((l) => l.startsWith("/init must be a symlink to /sbin/init")),
      p.join("\n"),
    );
    assert.ok(
      p.some((l) => l.startsWith("/usr/lib/vmm-task/vmm-task.js is missing or empty")),
      p.join("\n"),
    );
    assert.ok(
      p.some((l) => l.startsWith("/usr/lib/vmm-task/vsock.node is missing or empty")),
      p.join("\n"),
    );
  });

  it("fails the stage when an agent ELF needs a library outside the keyed closure", async () => {
    const odd = path.join(dir, "odd-task");
    await mkdir(odd, { recursive: true });
    for (const f of ["init", "vmm-task.js"]) await copyFile(path.join(task, f), path.join(odd, f));
    await writeFile(path.join(dir, "probe.c"), "int kuasar_probe(void) { return 1; }\n");
    await writeFile(path.join(dir, "addon.c"), "int kuasar_probe(void);\nint addon(void) { return kuasar_probe(); }\n");
    await cc(["-shared", "-fPIC", "-o", path.join(dir, "libkuasarprobe.so"), path.join(dir, "probe.c")]);
    await cc([
      ...["-shared", "-fPIC", "-o", path.join(odd, "vsock.node"), path.join(dir, "addon.c")],
      ...[`-L${dir}`, "-lkuasarprobe", `-Wl,-rpath,${dir}`],
    ]);
    const ctx = await buildContext(path.join(dir, "out-odd"), { task: odd });
    await assert.rejects(rootfsStage.build(ctx), (err: Error) => {
      assert.match(
        err.message,
        /^\[rootfs\] \/usr\/lib\/vmm-task\/vsock\.node needs .*\/libkuasarprobe\.so, which is outside the libraries this stage is keyed on/,
      );
      return true;
    });
  });

  it("fails the stage early when the task output has no init", async () => {
    const partial = path.join(dir, "partial-task");
    await mkdir(partial, { recursive: true });
    await copyFile(path.join(task, "vmm-task.js"), path.join(partial, "vmm-task.js"));
    await copyFile(path.join(task, "vsock.node"), path.join(partial, "vsock.node"));
    const ctx = await buildContext(path.join(dir, "out"), { task: partial });
    await assert.rejects(rootfsStage.build(ctx), (err: Error) => {
      assert.ok(err instanceof StageError);
      assert.match(
        err.message,
        /^\[rootfs\] the task stage output .*partial-task has no 'init'; rebuild it with: kuasar-build task$/,
      );
      return true;
    });
  });
});
