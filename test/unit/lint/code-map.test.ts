import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { repo } from "../../../testkit/daemon.ts";

// docs/architecture.md opens with a code map: it must name every code folder, and everything it names must exist.
const doc = readFileSync(path.join(repo, "docs/architecture.md"), "utf8");
const section = doc.slice(doc.indexOf("## Code map"), doc.indexOf("\n## ", doc.indexOf("## Code map") + 1));
const rows = section
  .split("\n")
  .filter((l) => l.startsWith("| `"))
  .map((l) => l.split("|").map((c) => c.trim()));
const ticks = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

/** Every file under dir (recursively), as paths relative to the repo. */
function walk(dir: string): string[] {
  return readdirSync(path.join(repo, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
  );
}

test("every folder the code map names exists, and every file it names is in that folder", () => {
  assert.ok(rows.length >= 15, "the code map table was not found");
  for (const [, paths = "", , what = ""] of rows) {
    const dirs = ticks(paths);
    for (const d of dirs) assert.ok(existsSync(path.join(repo, d)) && statSync(path.join(repo, d)).isDirectory(), d);
    const files = dirs.flatMap(walk);
    for (const name of ticks(what).filter((t) => /^[\w./-]+\.ts$/.test(t))) {
      assert.ok(
        files.some((f) => f.endsWith(`/${name}`)),
        `${name} (under ${dirs.join(", ")})`,
      );
    }
  }
});

test("the code map names every runtime folder and every top-level code folder", () => {
  const named = new Set(rows.flatMap(([, paths = ""]) => ticks(paths)).map((p) => p.replace(/\/$/, "")));
  const runtime = readdirSync(path.join(repo, "runtime"), { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => `runtime/${e.name}`);
  const top = ["pipeline", "installers", "kernel-configs", "rootfs", "testkit", "test", "bench", "scripts"];
  for (const d of [...runtime, ...top]) assert.ok(named.has(d), `docs/architecture.md's code map does not name ${d}/`);
});
