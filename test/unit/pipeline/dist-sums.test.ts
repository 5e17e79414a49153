import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { formatSums, parseSums } from "../../../pipeline/dist/sums.ts";
import { hashFile } from "../../../pipeline/lib/hash.ts";

test("SHA256SUMS is sorted, reads back, and is what sha256sum --check reads", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "sums-"));
  try {
    await writeFile(path.join(dir, "b.txt"), "b\n");
    await writeFile(path.join(dir, "a.txt"), "a\n");
    const entries = [];
    for (const f of ["b.txt", "a.txt"]) entries.push({ path: f, sha256: await hashFile(path.join(dir, f)) });
    const text = formatSums(entries);
    assert.deepEqual(
      text.split("\n").map((l) => l.slice(66)),
      ["a.txt", "b.txt", ""],
    );
    assert.deepEqual(parseSums(text), new Map(entries.map((e) => [e.path, e.sha256])));
    await writeFile(path.join(dir, "SHA256SUMS"), text);
    execFileSync("sha256sum", ["--check", "--strict", "--quiet", "SHA256SUMS"], { cwd: dir });
    await writeFile(path.join(dir, "a.txt"), "changed\n");
    assert.throws(() => execFileSync("sha256sum", ["--check", "--quiet", "SHA256SUMS"], { cwd: dir, stdio: "pipe" }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("names sha256sum would misread, bad digests and duplicates are refused; bad lines are named", () => {
  const sha = "0".repeat(64);
  assert.throws(() => formatSums([{ path: "a\nb", sha256: sha }]), /cannot name the path/);
  assert.throws(() => formatSums([{ path: "a\\b", sha256: sha }]), /cannot name the path/);
  assert.throws(() => formatSums([{ path: "a", sha256: "xyz" }]), /not a sha256/);
  assert.throws(
    () =>
      formatSums([
        { path: "a", sha256: sha },
        { path: "a", sha256: sha },
      ]),
    /twice/,
  );
  assert.throws(() => parseSums(`${sha}  a\nnot a line\n`, "X"), /X line 2 is not/);
});
