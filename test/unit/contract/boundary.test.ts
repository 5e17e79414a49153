import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { builtinModules } from "node:module";
import path from "node:path";
import { test } from "node:test";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const CONTRACT = path.join(ROOT, "runtime/contract");

test("the contract imports only itself, runtime/protos and node built-ins: both sides can take it", async () => {
  const allowed = (from: string, spec: string) => {
    if (spec.startsWith("node:") || builtinModules.includes(spec)) return true;
    const target = path.resolve(path.dirname(from), spec);
    return [CONTRACT, path.join(ROOT, "runtime/protos")].some((d) => target.startsWith(`${d}${path.sep}`));
  };
  const files = (await readdir(CONTRACT)).filter((f) => f.endsWith(".ts"));
  assert.ok(files.length >= 8, files.join(" "));
  for (const f of files) {
    const file = path.join(CONTRACT, f);
    const text = await readFile(file, "utf8");
    for (const [, spec] of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gm)) {
      assert.ok(allowed(file, spec!), `runtime/contract/${f} imports ${spec}`);
    }
  }
});
