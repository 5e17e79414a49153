import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, statSync, utimesSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

const repo = path.resolve(import.meta.dirname, "../../..");
const entry = path.join(repo, "pipeline/bin/kuasar-build.js");
// One bundle per checkout, named by a hash of the checkout's path.
const checkout = createHash("sha256").update(repo).digest("hex").slice(0, 12);
const bundle = path.join(repo, "node_modules/.cache/kuasar-build", checkout, "cli.mjs");
const help = () => execFileSync(process.execPath, [entry, "--help"], { encoding: "utf8" });

test("the CLI runs from a bundle that is rebuilt when one of its sources changes, and only then", () => {
  assert.match(help(), /^usage: kuasar-build/);
  const built = statSync(bundle).mtimeMs;
  help();
  assert.equal(statSync(bundle).mtimeMs, built, "unchanged sources: the bundle is reused");
  const source = path.join(repo, "pipeline/lib/hash.ts");
  const { atime, mtime } = statSync(source);
  try {
    utimesSync(source, atime, new Date(mtime.getTime() + 1000));
    assert.match(help(), /^usage: kuasar-build/);
    assert.ok(statSync(bundle).mtimeMs > built, "a touched source rebuilds the bundle");
  } finally {
    utimesSync(source, atime, mtime);
  }
  assert.ok(readFileSync(path.join(path.dirname(bundle), "cli.inputs.json"), "utf8").includes("pipeline/lib/hash.ts"));
});
