import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { Cache } from "../../../pipeline/lib/cache.ts";
import { runStages } from "../../../pipeline/lib/runner.ts";
import type { Stage } from "../../../pipeline/lib/stage.ts";

const tmp = await mkdtemp(path.join(os.tmpdir(), "runner-"));
after(() => rm(tmp, { recursive: true, force: true }));

test("a rebuilt artifact replaces bin/'s file by rename: a reader of the old one keeps reading it whole", async () => {
  const repo = path.join(tmp, "repo");
  await mkdir(path.join(repo, "pipeline/stages"), { recursive: true });
  await writeFile(path.join(repo, "pipeline/stages/disk.ts"), "// stage code, part of the key\n");
  let content = "A".repeat(1 << 20);
  const stage: Stage = {
    name: "disk",
    title: "a disk image",
    deps: [],
    inputs: async () => ({ content: content.slice(0, 1) }),
    build: async (ctx) => writeFile(path.join(ctx.out, "disk.img"), content),
    publish: { "disk.img": "disk.img" },
  };
  const binDir = path.join(tmp, "bin");
  const run = () =>
    runStages({
      repo,
      stages: [stage],
      targets: ["disk"],
      options: { profile: "micro", hypervisors: ["qemu"], kernelPatches: [], sourceDateEpoch: 1, verbose: false },
      cache: new Cache(path.join(tmp, "cache")),
      binDir,
    });
  await run();
  const img = path.join(binDir, "disk.img");
  const reader = await open(img, "r");
  try {
    const before = (await stat(img)).ino;
    content = "B".repeat(1 << 20);
    await run();
    assert.equal(await readFile(img, "utf8"), content, "bin/ has the new build");
    assert.notEqual((await stat(img)).ino, before, "a new file, not the old one overwritten");
    const old = Buffer.alloc(1 << 20);
    await reader.read(old, 0, old.length, 0);
    assert.equal(old.toString(), "A".repeat(1 << 20), "the open image is intact");
  } finally {
    await reader.close();
  }
});

test("a stage's tools run through its ctx.$: a failing one fails the build, naming the stage and the command", async () => {
  const repo = path.join(tmp, "repo-tools");
  await mkdir(repo, { recursive: true });
  const stage: Stage = {
    name: "tools",
    title: "runs a tool",
    deps: [],
    inputs: async () => ({}),
    build: async (ctx) => {
      const out = await ctx.$({ cwd: ctx.out })`${process.execPath} -e ${'console.log("made it")'}`;
      await writeFile(path.join(ctx.out, "made"), out.stdout);
      await ctx.$`${process.execPath} -e ${'console.error("it broke"); process.exit(4)'}`;
    },
    publish: {},
  };
  await assert.rejects(
    runStages({
      repo,
      stages: [stage],
      targets: ["tools"],
      options: { profile: "micro", hypervisors: ["qemu"], kernelPatches: [], sourceDateEpoch: 1, verbose: false },
      cache: new Cache(path.join(tmp, "cache-tools")),
      binDir: path.join(tmp, "bin-tools"),
    }),
    (err: Error) => {
      assert.match(
        err.message,
        /^\[tools\] \S*node -e .*exited with 4; its last line \(kuasar-build --verbose streams them all\):\nit broke$/s,
      );
      return true;
    },
  );
});
