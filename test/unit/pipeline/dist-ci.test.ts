import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import type { BuildSummary } from "../../../pipeline/cli.ts";
import { Cache } from "../../../pipeline/lib/cache.ts";
import { hashFile } from "../../../pipeline/lib/hash.ts";
import { runStages, type StageOutcome } from "../../../pipeline/lib/runner.ts";
import type { BuildOptions, Stage } from "../../../pipeline/lib/stage.ts";
import { StageError } from "../../../pipeline/lib/stage-error.ts";

// The pipeline as a CI job sees it: where release files land, plain timestamped lines, a JSON summary, and an
// exit status and message naming the stage that failed.

const repoRoot = path.resolve(import.meta.dirname, "../../..");
const tmp = await mkdtemp(path.join(os.tmpdir(), "dist-ci-"));
after(() => rm(tmp, { recursive: true, force: true }));
const options: BuildOptions = {
  profile: "micro",
  hypervisors: ["qemu"],
  kernelPatches: [],
  sourceDateEpoch: 1,
  verbose: false,
};

test("a stage publishing to dist/ lands there, and its outcome carries each file's size and sha256", async () => {
  const repo = path.join(tmp, "repo");
  await mkdir(repo);
  const release: Stage = {
    name: "release",
    title: "a release file",
    deps: [],
    inputs: async () => ({}),
    build: async (ctx) => writeFile(path.join(ctx.out, "r.tar"), "release\n"),
    publish: { "r.tar": "r-1.0.tar" },
    publishTo: "dist",
  };
  const seen: StageOutcome[] = [];
  const [o] = await runStages({
    repo,
    stages: [release],
    targets: ["release"],
    options,
    cache: new Cache(path.join(tmp, "cache")),
    binDir: path.join(tmp, "bin"),
    distDir: path.join(tmp, "dist"),
    onOutcome: (x) => seen.push(x),
  });
  const file = path.join(tmp, "dist", "r-1.0.tar");
  assert.equal(await readFile(file, "utf8"), "release\n");
  assert.deepEqual(o!.published, [{ name: "r-1.0.tar", file, size: 8, sha256: await hashFile(file) }]);
  assert.deepEqual(seen, [o]);
});

test("any error inside a stage, not only a tool's, is reported as that stage's failure", async () => {
  const repo = path.join(tmp, "repo-fail");
  await mkdir(repo);
  const broken: Stage = {
    name: "broken",
    title: "throws",
    deps: [],
    inputs: async () => ({}),
    build: async () => {
      throw new Error("ENOSPC: no space left on device, write");
    },
    publish: {},
  };
  await assert.rejects(
    runStages({
      repo,
      stages: [broken],
      targets: ["broken"],
      options,
      cache: new Cache(path.join(tmp, "cache-fail")),
      binDir: path.join(tmp, "bin-fail"),
    }),
    (err: unknown) => err instanceof StageError && err.stage === "broken" && /ENOSPC/.test(err.detail),
  );
});

const cli = (args: string[], env: Record<string, string> = {}) =>
  promisify(execFile)(process.execPath, [path.join(repoRoot, "pipeline/bin/kuasar-build.js"), ...args], {
    env: { ...process.env, ...env },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

test("--ci: timestamped progress lines, the summary table, and the JSON summary as the last line and in a file", async () => {
  const summary = path.join(tmp, "ci", "summary.json");
  const bin = path.join(tmp, "ci-bin");
  const r = await cli([
    "units",
    "--ci",
    "--cache-dir",
    path.join(tmp, "ci-cache"),
    "--bin-dir",
    bin,
    "--summary",
    summary,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\S+ \[\d\d:\d\d:\d\d\] Host service files/m, "listr2's simple renderer with timestamps");
  assert.ok(!r.stdout.includes("\u001b["), "no terminal escapes in a CI log");
  assert.match(r.stdout, /^ {2}units\s+built\s+[\d.]+ s/m);
  const lines = r.stdout.trimEnd().split("\n");
  const last = lines[lines.length - 1]!;
  assert.match(last, /^summary: \{/);
  const fromLine = JSON.parse(last.slice("summary: ".length)) as BuildSummary;
  assert.deepEqual(JSON.parse(await readFile(summary, "utf8")), fromLine);
  assert.equal(fromLine.ok, true);
  assert.deepEqual(fromLine.targets, ["units"]);
  const units = fromLine.stages.find((s) => s.stage === "units")!;
  assert.equal(units.status, "built");
  const unit = units.artifacts.find((a) => a.name === "kuasar-vmm.service")!;
  assert.equal(unit.path, path.join(bin, "kuasar-vmm.service"));
  assert.equal(unit.sha256, await hashFile(unit.path));

  const again = await cli(
    ["units", "--cache-dir", path.join(tmp, "ci-cache"), "--bin-dir", bin, "--summary", summary],
    {
      CI: "true",
    },
  );
  assert.equal(again.code, 0, again.stderr);
  const warm = JSON.parse(await readFile(summary, "utf8")) as BuildSummary;
  assert.equal(warm.stages[0]!.status, "cached", "CI=true is --ci; the second run is a cache hit");
  assert.match(again.stdout, /^summary: \{.*"status":"cached"/m);
});

test("a failing stage: exit 1, a message naming the stage, and a summary saying which stage failed", async () => {
  const summary = path.join(tmp, "fail", "summary.json");
  const r = await cli([
    "kernel",
    "--ci",
    "--kernel-source",
    path.join(tmp, "no-such-source.tar.xz"),
    "--cache-dir",
    path.join(tmp, "fail-cache"),
    "--bin-dir",
    path.join(tmp, "fail-bin"),
    "--summary",
    summary,
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /kuasar-build: stage 'kernel' failed: kernel source .*no-such-source\.tar\.xz does not exist/);
  const s = JSON.parse(await readFile(summary, "utf8")) as BuildSummary;
  assert.equal(s.ok, false);
  assert.equal(s.failed?.stage, "kernel");
  assert.match(s.failed?.error ?? "", /does not exist/);
});
