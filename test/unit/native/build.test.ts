import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { buildNative } from "../../../runtime/native/build.ts";
import { nativeArtifacts } from "./artifacts.ts";

let dir: string;
before(async () => {
  await nativeArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "native-build-"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("a second build of unchanged sources reuses everything", async () => {
  const first = await nativeArtifacts();
  // What a rebuild would rewrite: init, and the addon where node-gyp builds it (the copy in outDir is made each time).
  const outputs = [
    first.init,
    fileURLToPath(new URL("../../../runtime/native/vsock/build/Release/vsock.node", import.meta.url)),
  ];
  const identity = () =>
    outputs.map((f) => {
      const st = statSync(f);
      return { f, ino: st.ino, mtimeMs: st.mtimeMs };
    });
  const built = identity();
  const again = await buildNative({ outDir: path.dirname(first.init) });
  assert.deepEqual(again, first);
  assert.deepEqual(identity(), built, "nothing was compiled again");
  assert.ok(existsSync(first.vsockAddon));
  const usage = spawnSync(first.init, [], { encoding: "utf8" });
  assert.equal(usage.status, 2, usage.stderr);
});

test("agentArgv is compiled in as PID 1's default command (new PID namespace, no '--')", async () => {
  const built = await buildNative({
    outDir: dir,
    agentArgv: [process.execPath, "-e", 'console.log("agent \\"ran\\""); process.exit(5)'],
  });
  const r = spawnSync("unshare", ["--pid", "--fork", "--mount", "--mount-proc", built.init, "ignored-kernel-arg"], {
    encoding: "utf8",
    timeout: 60_000,
  });
  if (r.error) assert.fail(`unshare (util-linux) is needed: apt-get install -y util-linux (${r.error.message})`);
  assert.equal(r.stdout, 'agent "ran"\n');
  assert.match(r.stderr, /init: vmm-task exited with status 5; powering off/);
  assert.equal(r.signal, "SIGINT");
});
