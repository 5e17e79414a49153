import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import {
  cleanupDaemonDir,
  type Daemon,
  repo,
  requireArtifacts,
  startDaemon,
  writeConfig,
} from "../../testkit/daemon.ts";

// kuasar-ctl against a real pod VM (QEMU, TCG here, hybrid vsock): the daemon from source with the debug console
// turned on through its config, a sandbox created and started through the gRPC Controller as containerd does, then
// list, logs, exec (output, exit status, timeout) and shell as an operator runs them.
let dir: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;
const ID = "ctl-pod-7f3a";

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-ctl-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config, "\n[hypervisor.task]\ndebug = true\n");
  daemon = await startDaemon(dir, config);
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${daemon.sock}`));
});

after(async () => {
  await controller?.shutdown({ sandboxId: ID }).catch(() => undefined);
  closeController?.();
  await cleanupDaemonDir(daemon, dir);
});

/** kuasar-ctl from source, pointed at this daemon; stdin is written and closed. */
function ctl(command: string, args: string[], stdin = ""): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      path.join(repo, "runtime/ctl/main.ts"),
      command,
      "--dir",
      path.join(dir, "state"),
      "--listen",
      daemon.sock,
      ...args,
    ],
    { cwd: repo, stdio: ["pipe", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  p.stdout.on("data", (d) => {
    stdout += d;
  });
  p.stderr.on("data", (d) => {
    stderr += d;
  });
  p.stdin.end(stdin);
  return new Promise((resolve) => p.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

test("kuasar-ctl lists, shows the console log, and runs commands in a pod VM", { timeout: 300_000 }, async () => {
  await controller.create({ sandboxId: ID });
  const started = await controller.start({ sandboxId: ID });

  const list = await ctl("list", []);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`^daemon: serving on ${daemon.sock}\n`));
  assert.match(
    list.stdout,
    new RegExp(`\n${ID} +running +ready +${started.pid} +\\d+s +ttrpc\\+unix://.*/${ID}/task\\.sock\n`),
  );

  const logs = await ctl("logs", ["-n", "200", "ctl-p"]);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, /vmm-task serving ttrpc on vsock port 1024/);

  // A prefix is enough; several lines of output, and the guest's own kernel. A pod without a hostname gets the
  // host's, as containerd gives a runc pod.
  const hello = await ctl("exec", ["ctl-p", "--", "echo hello from $(hostname); uname -r"]);
  assert.equal(hello.code, 0, hello.stderr);
  assert.match(hello.stdout, new RegExp(`^hello from ${os.hostname()}\n6\\.1\\.\\d+\n$`));

  // The exit status passes through; several arguments are quoted as words; output need not end in a newline.
  const seven = await ctl("exec", [ID, "sh", "-c", "printf 'no newline'; exit 7"]);
  assert.deepEqual([seven.code, seven.stdout], [7, "no newline"], seven.stderr);

  // --timeout: 124 and the command is gone from the guest (ps shows a sleep that runs, so its absence later counts).
  const bg = await ctl("exec", [ID, "--", "sleep 72 & ps"]);
  assert.match(bg.stdout, /sleep 72/);
  const slow = await ctl("exec", ["--timeout", "4", ID, "--", "sleep 71; echo not-reached"]);
  assert.equal(slow.code, 124, slow.stderr);
  assert.match(slow.stderr, /timed out after 4 s/);
  assert.ok(!slow.stdout.includes("not-reached"));
  const ps = await ctl("exec", [ID, "--", "ps"]);
  assert.equal(ps.code, 0, ps.stderr);
  assert.doesNotMatch(ps.stdout, /sleep 71/);

  // The interactive shell with piped input: what is typed runs, and the end of input logs out.
  const shell = await ctl("shell", [ID], "echo shell-$((6*7))\n");
  assert.equal(shell.code, 0, shell.stderr);
  assert.match(shell.stdout, /shell-42/);
});
