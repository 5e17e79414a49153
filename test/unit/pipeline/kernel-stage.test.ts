import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { MANDATORY_SYMBOLS } from "../../../pipeline/kernel/config.ts";
import { $quiet } from "../../../pipeline/lib/shell.ts";
import { type BuildOptions, DigestMemo, keyContext } from "../../../pipeline/lib/stage.ts";
import { BUILTIN_PATCHES, kernelStage, reproducibleEnv } from "../../../pipeline/stages/kernel.ts";

let repo: string;
const options = (over: Partial<BuildOptions> = {}): BuildOptions => ({
  profile: "micro",
  hypervisors: ["qemu"],
  kernelSource: "linux.tar.gz",
  kernelPatches: [],
  sourceDateEpoch: 1700000000,
  verbose: false,
  ...over,
});

before(async () => {
  repo = await mkdtemp(path.join(os.tmpdir(), "kernel-stage-"));
  await mkdir(path.join(repo, "kernel-configs/fragments"), { recursive: true });
  await mkdir(path.join(repo, "kernel-configs/hypervisors"), { recursive: true });
  await writeFile(
    path.join(repo, "kernel-configs/fragments/vsock.config"),
    MANDATORY_SYMBOLS.map((s) => `CONFIG_${s}=y`).join("\n"),
  );
  await writeFile(path.join(repo, "kernel-configs/hypervisors/qemu.config"), "CONFIG_PVH=y\n");
  await writeFile(path.join(repo, "kernel-configs/hypervisors/stratovirt.config"), "CONFIG_EFI=y\n");
  await mkdir(path.join(repo, "k/linux"), { recursive: true });
  await writeFile(path.join(repo, "k/linux/Makefile"), "all:\n");
  await $quiet`tar -czf ${path.join(repo, "linux.tar.gz")} -C ${path.join(repo, "k")} linux`;
});
after(async () => {
  await rm(repo, { recursive: true, force: true });
});

async function key(opts: BuildOptions): Promise<string> {
  const ctx = keyContext(repo, opts, new DigestMemo(path.join(repo, "memo.json")));
  return JSON.stringify(await kernelStage.inputs(ctx));
}

describe("kernel stage inputs", () => {
  test("cover source, fragments, patches, profile, hypervisors, toolchain and epoch", async () => {
    const ctx = keyContext(repo, options(), new DigestMemo(path.join(repo, "memo.json")));
    const inputs = (await kernelStage.inputs(ctx)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(inputs).sort(), [
      "fragments",
      "helpers",
      "hypervisors",
      "patches",
      "profile",
      "source",
      "sourceDateEpoch",
      "tools",
    ]);
    assert.deepEqual(Object.keys(inputs.tools as object).sort(), ["bc", "bison", "flex", "gcc", "ld", "make", "zstd"]);
    assert.match((inputs.tools as Record<string, string>).gcc!, /gcc/);
    assert.deepEqual(Object.keys(inputs.helpers as object), [
      "config.ts",
      "fragment.ts",
      "source.ts",
      "tree.ts",
      "verify.ts",
    ]);
  });

  test("change when anything that shapes the kernel changes, and only then", async () => {
    const base = await key(options());
    assert.equal(await key(options({ verbose: true })), base);
    assert.equal(await key(options({ hypervisors: ["qemu", "qemu"] })), base);
    assert.notEqual(await key(options({ profile: "mini" })), base);
    assert.notEqual(await key(options({ sourceDateEpoch: 1 })), base);
    assert.notEqual(await key(options({ hypervisors: ["qemu", "stratovirt"] })), base);
    const patch = path.join(repo, "0001.patch");
    await writeFile(patch, "--- a/x\n+++ b/x\n");
    assert.notEqual(await key(options({ kernelPatches: [patch] })), base);
    await writeFile(path.join(repo, "kernel-configs/hypervisors/qemu.config"), "CONFIG_PVH=y\nCONFIG_ACPI=y\n");
    const edited = await key(options());
    await writeFile(path.join(repo, "kernel-configs/hypervisors/qemu.config"), "CONFIG_PVH=y\n");
    assert.notEqual(edited, base);
  });

  test("the patches in kernel-configs/patches apply to every build, in name order, before --kernel-patch ones", async () => {
    const base = await key(options());
    const dir = path.join(repo, BUILTIN_PATCHES);
    await mkdir(dir);
    try {
      await writeFile(path.join(dir, "0002-b.patch"), "--- a/b\n+++ b/b\n");
      await writeFile(path.join(dir, "0001-a.patch"), "--- a/a\n+++ b/a\n");
      await writeFile(path.join(dir, "notes.txt"), "not a patch\n");
      const given = path.join(repo, "0000-given.patch");
      await writeFile(given, "--- a/g\n+++ b/g\n");
      const ctx = keyContext(repo, options({ kernelPatches: [given] }), new DigestMemo(path.join(repo, "memo.json")));
      const inputs = (await kernelStage.inputs(ctx)) as { patches: string[] };
      const digest = async (f: string) => ctx.fileDigest(f);
      assert.deepEqual(inputs.patches, [
        await digest(path.join(dir, "0001-a.patch")),
        await digest(path.join(dir, "0002-b.patch")),
        await digest(given),
      ]);
      assert.notEqual(await key(options()), base);
    } finally {
      await rm(dir, { recursive: true });
    }
    assert.equal(await key(options()), base);
  });

  test("a missing patch is named", async () => {
    await assert.rejects(key(options({ kernelPatches: ["nope.patch"] })), /kernel patch .*nope\.patch does not exist/);
  });
});

describe("reproducibleEnv", () => {
  test("pins the build identity and drops a parent make's jobserver flags", () => {
    process.env.MAKEFLAGS = " -j4 --jobserver-auth=3,4";
    try {
      const env = reproducibleEnv(1700000000);
      assert.equal(env.KBUILD_BUILD_TIMESTAMP, "Tue, 14 Nov 2023 22:13:20 GMT");
      assert.equal(env.SOURCE_DATE_EPOCH, "1700000000");
      assert.equal(env.KBUILD_BUILD_USER, "kuasar");
      assert.equal(env.KBUILD_BUILD_HOST, "kuasar-vmm");
      assert.equal(env.KBUILD_BUILD_VERSION, "1");
      assert.equal(env.LOCALVERSION, "");
      assert.equal(env.MAKEFLAGS, undefined);
      assert.equal(env.PATH, process.env.PATH);
    } finally {
      delete process.env.MAKEFLAGS;
    }
  });
});
