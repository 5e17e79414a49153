import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/**
 * Runs an ES module snippet as nobody (uid/gid 65534, no groups, so no capabilities): any local user on a host.
 * The snippet prints one JSON line; that is returned parsed. Needs root to switch users.
 */
export function runAsNobody(script: string): Record<string, unknown> {
  assert.equal(process.getuid?.(), 0, "this test switches to nobody with setpriv: run it as root");
  const r = spawnSync(
    "setpriv",
    ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "--import", "tsx", "--input-type=module"],
    { input: script, encoding: "utf8", cwd: repo, env: process.env },
  );
  if (r.error) throw new Error(`setpriv failed to start: ${r.error.message} (apt-get install -y util-linux)`);
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`the nobody child printed no JSON line (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** An import specifier for a repo module the child can load. */
export function repoModule(rel: string): string {
  return JSON.stringify(path.join(repo, rel));
}
