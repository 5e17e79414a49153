import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { bundleNode } from "../../../pipeline/lib/bundle.ts";

// bundleNode's `apart`: a module loaded with import() gets a file of its own beside the bundle (the agent's
// OpenTelemetry), loaded at run time only, also from a V8 startup snapshot of the bundle.

const run = promisify(execFile);
const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures/apart");
const rel = (f: string) => path.relative(path.resolve(fixtures, "../../../../.."), path.join(fixtures, f));
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bundle-apart-"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("an apart module is its own file, loaded only when imported, from the bundle and from its snapshot", async () => {
  const main = path.join(dir, "main.js");
  await bundleNode(path.join(fixtures, "entry.ts"), main, { apart: { [rel("lazy.ts")]: "main-lazy.js" } });
  assert.doesNotMatch(await readFile(main, "utf8"), /x \+ 22/);
  assert.match(await readFile(path.join(dir, "main-lazy.js"), "utf8"), /x \+ 22/);

  const expected = "loaded before import: false\nanswer: 42\n";
  // Another working directory: the file is found beside the bundle, not in the cwd.
  assert.equal((await run(process.execPath, [main], { cwd: os.tmpdir() })).stdout, expected);

  // A snapshot has no dynamic import callback; the apart stub must not need one.
  const blob = path.join(dir, "main.blob");
  await run(process.execPath, ["--snapshot-blob", blob, "--build-snapshot", main], { cwd: dir });
  assert.equal((await run(process.execPath, ["--snapshot-blob", blob], { cwd: os.tmpdir() })).stdout, expected);
});

test("a package in both the bundle and an apart file is refused, naming it", async () => {
  await assert.rejects(
    bundleNode(path.join(fixtures, "entry-dup.ts"), path.join(dir, "dup.js"), {
      apart: { [rel("lazy-dup.ts")]: "dup-lazy.js" },
    }),
    /lazy-dup\.ts is bundled apart from .*entry-dup\.ts, but both include smol-toml/,
  );
});
