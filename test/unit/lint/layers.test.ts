import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import { repo } from "../../../testkit/daemon.ts";

// The layer rules in .dependency-cruiser.cjs (run by `npm run lint`) on small trees: each forbidden import is
// reported under its rule's name, so a rule that stopped matching would fail here rather than pass silently.
const run = promisify(execFile);
const depcruise = path.join(repo, "node_modules/.bin/depcruise");
const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** Cruises a tree of files (path -> the paths it imports) with the repo's rules; the names of the rules broken. */
async function broken(tree: Record<string, string[]>): Promise<string[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "layers-"));
  dirs.push(dir);
  await writeFile(
    path.join(dir, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { allowImportingTsExtensions: true } }),
  );
  for (const [file, imports] of Object.entries(tree)) {
    await mkdir(path.join(dir, path.dirname(file)), { recursive: true });
    const lines = imports.map((to, i) => {
      const rel = path.relative(path.dirname(file), to);
      return `import { x${i} } from "${rel.startsWith(".") ? rel : `./${rel}`}";\nexport { x${i} };\n`;
    });
    await writeFile(path.join(dir, file), `${lines.join("")}export const x = 1;\n`);
  }
  const roots = [...new Set(Object.keys(tree).map((f) => f.split("/")[0]!))];
  const args = ["--config", path.join(repo, ".dependency-cruiser.cjs"), "--output-type", "json", ...roots];
  const r = await run(depcruise, args, { cwd: dir }).catch((e: { stdout: string }) => ({ stdout: e.stdout }));
  const out = JSON.parse(r.stdout) as { summary: { violations: { rule: { name: string } }[] } };
  return [...new Set(out.summary.violations.map((v) => v.rule.name))].sort();
}

test("the repo's own tree breaks no layer rule", async () => {
  const roots = ["runtime", "pipeline", "installers", "testkit", "bench", "scripts", "test"];
  const args = ["--config", ".dependency-cruiser.cjs", "--output-type", "err", ...roots];
  const failed = await run(depcruise, args, { cwd: repo }).then(
    () => "",
    (e: { stdout: string }) => e.stdout,
  );
  assert.equal(failed, "", failed);
});

test("the allowed directions pass", async () => {
  assert.deepEqual(
    await broken({
      "runtime/protos/p.ts": [],
      "runtime/ttrpc/t.ts": ["runtime/protos/p.ts"],
      "runtime/contract/c.ts": ["runtime/ttrpc/t.ts"],
      "runtime/log/l.ts": ["runtime/contract/c.ts"],
      "runtime/agent/a.ts": ["runtime/contract/c.ts", "runtime/log/l.ts"],
      "runtime/sandboxer/d.ts": ["runtime/contract/c.ts"],
      "runtime/doctor/d.ts": ["runtime/sandboxer/d.ts"],
      "runtime/sandboxer/main.ts": ["runtime/doctor/d.ts"],
      "installers/i.ts": ["runtime/contract/c.ts"],
      "pipeline/s.ts": ["installers/i.ts"],
      "testkit/k.ts": ["runtime/sandboxer/d.ts"],
      "bench/b.ts": ["testkit/k.ts"],
      "test/t.test.ts": ["testkit/k.ts", "runtime/agent/a.ts"],
    }),
    [],
  );
});

test("each forbidden import fails under its rule's name", async () => {
  const cases: [string, Record<string, string[]>][] = [
    ["agent-stands-alone", { "runtime/agent/a.ts": ["runtime/sandboxer/d.ts"], "runtime/sandboxer/d.ts": [] }],
    [
      "only-the-guest-imports-the-agent",
      { "runtime/sandboxer/d.ts": ["runtime/agent/a.ts"], "runtime/agent/a.ts": [] },
    ],
    ["contract-imports-only-protocol", { "runtime/contract/c.ts": ["runtime/log/l.ts"], "runtime/log/l.ts": [] }],
    ["protocol-is-the-bottom", { "runtime/ttrpc/t.ts": ["runtime/contract/c.ts"], "runtime/contract/c.ts": [] }],
    ["daemon-does-not-import-tools", { "runtime/sandboxer/d.ts": ["runtime/doctor/d.ts"], "runtime/doctor/d.ts": [] }],
    [
      "nothing-imports-an-entry-point",
      { "runtime/ctl/c.ts": ["runtime/sandboxer/main.ts"], "runtime/sandboxer/main.ts": [] },
    ],
    [
      "runtime-does-not-import-build-deploy-or-tests",
      { "runtime/sandboxer/d.ts": ["pipeline/s.ts"], "pipeline/s.ts": [] },
    ],
    ["deploy-does-not-import-build", { "installers/i.ts": ["pipeline/s.ts"], "pipeline/s.ts": [] }],
    ["bench-and-scripts-use-the-testkit", { "bench/b.ts": ["test/vm/h.ts"], "test/vm/h.ts": [] }],
    [
      "no-circular",
      { "runtime/sandboxer/a.ts": ["runtime/sandboxer/b.ts"], "runtime/sandboxer/b.ts": ["runtime/sandboxer/a.ts"] },
    ],
  ];
  for (const [rule, tree] of cases) assert.deepEqual(await broken(tree), [rule], rule);
});
