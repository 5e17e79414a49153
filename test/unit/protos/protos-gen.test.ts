// The committed runtime/protos/gen/ must be exactly what generate.sh produces
// from the .proto files (offline: buf and protoc-gen-es come from node_modules).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";

const protos = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../runtime/protos");

function files(root: string, rel = ""): string[] {
  return readdirSync(path.join(root, rel)).flatMap((name) => {
    const p = path.join(rel, name);
    return statSync(path.join(root, p)).isDirectory() ? files(root, p) : [p];
  });
}

it("runtime/protos/gen matches a fresh generation", () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "protos-gen-"));
  try {
    const out = path.join(tmp, "gen");
    execFileSync("bash", [path.join(protos, "generate.sh"), out], { stdio: "pipe" });
    const committed = files(path.join(protos, "gen")).sort();
    const fresh = files(out).sort();
    assert.deepEqual(committed, fresh, "generated file set differs: run npm run gen:protos and commit gen/");
    for (const f of fresh) {
      assert.equal(
        readFileSync(path.join(protos, "gen", f), "utf8"),
        readFileSync(path.join(out, f), "utf8"),
        `gen/${f} is stale: run npm run gen:protos and commit gen/`,
      );
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
