import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { which } from "zx";
import { MANDATORY_SYMBOLS } from "../../../pipeline/kernel/config.ts";
import { DigestMemo, keyContext } from "../../../pipeline/lib/stage.ts";
import { kernelStage } from "../../../pipeline/stages/kernel.ts";

// Its own file: tool versions are memoised per process, and this must be the first lookup of bison.
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test("a missing build tool fails the kernel stage's planning, naming the Debian package", async () => {
  const repo = await mkdtemp(path.join(os.tmpdir(), "kernel-tools-"));
  dirs.push(repo);
  await mkdir(path.join(repo, "kernel-configs/fragments"), { recursive: true });
  await mkdir(path.join(repo, "kernel-configs/hypervisors"), { recursive: true });
  await writeFile(
    path.join(repo, "kernel-configs/fragments/vsock.config"),
    MANDATORY_SYMBOLS.map((s) => `CONFIG_${s}=y`).join("\n"),
  );
  await writeFile(path.join(repo, "kernel-configs/hypervisors/qemu.config"), "");
  await writeFile(path.join(repo, "linux.tar"), "");
  // A PATH with gcc, ld, make and flex but no bison.
  const bin = path.join(repo, "bin");
  await mkdir(bin);
  for (const t of ["gcc", "ld", "make", "flex"]) {
    await symlink(await which(t), path.join(bin, t));
  }
  const ctx = keyContext(
    repo,
    {
      profile: "micro",
      hypervisors: ["qemu"],
      kernelSource: "linux.tar",
      kernelPatches: [],
      sourceDateEpoch: 0,
      verbose: false,
    },
    new DigestMemo(path.join(repo, "memo.json")),
  );
  const saved = process.env.PATH;
  process.env.PATH = bin;
  try {
    await assert.rejects(
      kernelStage.inputs(ctx),
      /required tool 'bison' was not found on PATH; install it with: apt-get install -y bison/,
    );
  } finally {
    process.env.PATH = saved;
  }
});
