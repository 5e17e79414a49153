import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { SandboxService } from "../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { dialHybridVsock } from "../../runtime/transport/hybrid-vsock.ts";
import { Code, TtrpcClient, type TtrpcError } from "../../runtime/ttrpc/index.ts";
import { requireArtifacts } from "../../testkit/daemon.ts";
import { Scene } from "../../testkit/scene.ts";

// Who may talk to a guest's agent. The guest is booted as on a vhost-vsock host (task.hybrid_vsock=0 overrides what
// the daemon sets for hybrid vsock), so it serves only privileged source ports: vhost-device-vsock numbers the
// host's connections from 0 up, so the first 1024 pass and the next is an unprivileged port, which is what any
// local user's AF_VSOCK connect to the guest's CID would come from on a vhost-vsock host. Without task.debug there
// is no root shell to reach at all. And the sockets in the sandbox directory are root's alone.
let scene: Scene;
let sandbox: string;

before(async () => {
  requireArtifacts();
  scene = await Scene.start("sec-agent-", (c) => `${c}kernel_params = "task.hybrid_vsock=0"\n`);
  await scene.pod("strict");
  sandbox = scene.sandboxDir("strict");
});

after(async () => {
  await scene?.close();
});

async function agent(): Promise<TtrpcClient> {
  return new TtrpcClient(await dialHybridVsock(path.join(sandbox, "task.vsock"), 1024, { timeoutMs: 5000 }));
}

test("without task.debug there is no root shell: ExecVMProcess is refused and port 1025 has no listener", {
  timeout: 120_000,
}, async () => {
  const client = await agent();
  try {
    await assert.rejects(
      client.service(SandboxService).execVMProcess({ command: "id", stdin: Buffer.alloc(0) }),
      (e: TtrpcError) => e.code === Code.PermissionDenied && /task\.debug/.test(e.message),
    );
  } finally {
    client.close();
  }
  await assert.rejects(dialHybridVsock(path.join(sandbox, "task.vsock"), 1025, { timeoutMs: 5000 }));
});

test("a peer with an unprivileged source port is refused by the guest agent", { timeout: 400_000 }, async () => {
  // Use up the privileged ports vhost-device-vsock hands out (the daemon's dials took some). The guest's kernel
  // accepts every one (vhost-device-vsock then says OK); the agent closes the unprivileged ones at once and says so
  // on the console, which reaches console.log through the serial port and the daemon's copy.
  const consoleText = () => readFileSync(path.join(sandbox, "console.log"), "utf8");
  let dials = 0;
  for (; dials < 80 && !/refused cid/.test(consoleText()); dials++) {
    for (let k = 0; k < 50; k++) {
      const s = await dialHybridVsock(path.join(sandbox, "task.vsock"), 1024, { timeoutMs: 5000 }).catch(
        () => undefined,
      );
      s?.destroy();
    }
  }
  let console = consoleText();
  for (let i = 0; i < 60 && !/refused cid/.test(console); i++) {
    await new Promise((r) => setTimeout(r, 500));
    console = consoleText();
  }
  const client = await agent().catch(() => undefined);
  if (client) {
    await assert.rejects(client.service(SandboxService).check({ service: "" }, { timeoutMs: 10_000 }));
    client.close();
  }
  const refused = [...console.matchAll(/vsock port 1024: refused cid 2 port (\d+): source port above 1023/g)];
  assert.ok(
    refused.length > 0,
    `the refusal is on the console after ${dials * 50} dials:\n${console.split("\n").slice(-15).join("\n")}`,
  );
  assert.ok(
    refused.every((m) => Number(m[1]) >= 1024),
    "only unprivileged ports were refused",
  );
  assert.equal(
    (await scene.controller.status({ sandboxId: "strict" })).state,
    "SANDBOX_READY",
    "the daemon's own link holds",
  );
  await scene.assertUnharmed();
});

test("a local user reaches no socket and no file in the sandbox directory", { timeout: 60_000 }, async () => {
  const names = await readdir(sandbox);
  const script = `
    const net = require("node:net"), fs = require("node:fs");
    const out = {};
    const names = ${JSON.stringify(names)};
    let left = names.length;
    for (const n of names) {
      const p = ${JSON.stringify(sandbox)} + "/" + n;
      try { fs.readFileSync(p); out[n] = "read"; } catch (e) { out[n] = e.code; }
      const s = net.connect(p);
      s.on("connect", () => { out[n] = "connected"; s.destroy(); if (--left === 0) done(); });
      s.on("error", () => { if (--left === 0) done(); });
    }
    function done() { console.log(JSON.stringify(out)); }
  `;
  for (const ids of [
    ["--reuid=65534", "--regid=65534"],
    ["--reuid=65534", "--regid=0"],
  ]) {
    const r = spawnSync("setpriv", [...ids, "--clear-groups", process.execPath, "-e", script], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout) as Record<string, string>;
    const reached = Object.entries(got).filter(([, how]) => how === "read" || how === "connected");
    assert.deepEqual(reached, [], `${ids.join(" ")} reached ${JSON.stringify(got)}`);
  }
});
