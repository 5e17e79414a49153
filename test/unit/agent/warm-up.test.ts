import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { sandboxNamespaces } from "../../../runtime/agent/spec.ts";
import { warmUp } from "../../../runtime/agent/warm-up.ts";

test("the warm-up runs SetupSandbox's checks on a valid sample and only creates the namespace directory", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "warm-up-"));
  try {
    const nsDir = path.join(dir, "sandbox-ns");
    assert.equal(warmUp(nsDir), undefined, "its sample request passes every check");
    assert.ok(existsSync(nsDir));
    assert.deepEqual(readdirSync(nsDir), [], "no namespace file made");
    assert.deepEqual(sandboxNamespaces(nsDir), {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a warm-up that cannot finish says why instead of throwing", () => {
  const why = warmUp("/dev/null/sandbox-ns");
  assert.match(why ?? "", /ENOTDIR/);
});
