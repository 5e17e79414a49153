import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { AGENT_READY } from "../../runtime/contract/readiness.ts";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { bin, cleanupDaemonDir, type Daemon, repo, requireArtifacts, writeConfig } from "../../testkit/daemon.ts";

// The daemon's log as an operator reads it under systemd: the daemon from source with its stderr a file that
// JOURNAL_STREAM names (as systemd names journald's stream socket), so every line carries its syslog priority. A
// real guest's console lines must arrive in that log tagged with their sandbox, never at a priority above warning;
// a Start that fails must show up at error priority (what `journalctl -p warning` lists).
let dir: string;
let daemon: Daemon;
let stderrFile: string;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;
const ID = "guest-log-7c1e";
const BAD = "guest-log-bad";

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-guest-log-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config);
  stderrFile = path.join(dir, "daemon.stderr");
  const fd = openSync(stderrFile, "a");
  const st = fstatSync(fd);
  const sock = path.join(dir, "vmm-sandboxer.sock");
  const proc = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      path.join(repo, "runtime/sandboxer/main.ts"),
      "-c",
      config,
      "-d",
      path.join(dir, "state"),
    ].concat(["-l", sock]),
    {
      stdio: ["ignore", "ignore", fd],
      env: {
        ...process.env,
        KUASAR_VSOCK_ADDON: path.join(bin, "vsock.node"),
        KUASAR_NS_ADDON: path.join(bin, "ns.node"),
        JOURNAL_STREAM: `${st.dev}:${st.ino}`,
      },
    },
  );
  closeSync(fd);
  daemon = { proc, sock, log: () => readFileSync(stderrFile, "utf8") };
  while (!daemon.log().includes("serving the sandbox API")) {
    if (proc.exitCode !== null) throw new Error(`vmm-sandboxer exited with ${proc.exitCode}:\n${daemon.log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${sock}`));
});

after(async () => {
  await controller?.shutdown({ sandboxId: ID }).catch(() => undefined);
  closeController?.();
  await cleanupDaemonDir(daemon, dir);
});

/** The daemon's lines so far, each with its priority, level, target and the rest. */
function lines(): { prio: number; level: string; target: string; rest: string; line: string }[] {
  return daemon
    .log()
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const m = /^<(\d)>\[\S+ (\w+) ([^\]]+)\] (.*)$/.exec(line);
      assert.ok(m, `a line without a priority prefix or Kuasar's prefix: ${line}`);
      return { prio: Number(m[1]), level: m[2]!, target: m[3]!, rest: m[4]!, line };
    });
}

test("a real guest's console reaches the daemon's log tagged with its sandbox, at most at warning", {
  timeout: 300_000,
}, async () => {
  await controller.create({ sandboxId: ID });
  await controller.start({ sandboxId: ID });
  const guest = lines().filter((l) => l.target === "guest");
  const kernel = guest.find((l) => /Linux version 6\.1\./.test(l.rest));
  assert.ok(kernel, `no kernel line from the guest in:\n${guest.map((l) => l.line).join("\n")}`);
  assert.match(kernel.line, new RegExp(`^<6>\\[\\S+ INFO guest\\] .*Linux version .* sandbox=${ID}$`));
  // The agent's readiness line, logged by vmm-task on the serial console, comes through as the agent wrote it.
  assert.ok(
    guest.some((l) => l.rest.includes(AGENT_READY) && l.rest.endsWith(` sandbox=${ID}`)),
    "the agent's ready line is forwarded",
  );
  for (const l of guest) {
    assert.ok(l.prio >= 4 && (l.level === "INFO" || l.level === "WARN" || l.level === "DEBUG"), l.line);
    assert.ok(l.rest.endsWith(` sandbox=${ID}`), l.line);
  }
  assert.ok(!guest.some((l) => l.rest.includes("guest console lines dropped")), "a normal boot is not rate-limited");
  // The daemon's own lines about the sandbox carry the field too.
  assert.ok(
    lines().some((l) => /^vmm pid \d+ started/.test(l.rest) && / sandbox=guest-log-7c1e vmm_pid=\d+ /.test(l.rest)),
  );
  await controller.stop({ sandboxId: ID, timeoutSecs: 10 });
});

test("a failed Start is logged at error priority, which journalctl -p warning lists", {
  timeout: 120_000,
}, async () => {
  // A network namespace that does not exist: Start fails before any VM is spawned, and cleanly.
  await controller.create({ sandboxId: BAD, netnsPath: `/var/run/netns/kuasar-missing-${process.pid}` });
  await assert.rejects(controller.start({ sandboxId: BAD }), /start sandbox guest-log-bad/);
  const failed = lines().filter((l) => l.rest.includes(`sandbox=${BAD}`) && l.prio <= 4);
  assert.ok(failed.length, `no warning or error line for ${BAD} in:\n${daemon.log()}`);
  assert.match(
    failed[0]!.line,
    new RegExp(`^<3>\\[\\S+ ERROR vmm_sandboxer::vm::${BAD}\\] start failed: .* sandbox=${BAD} duration_ms=\\d+$`),
  );
  await controller.shutdown({ sandboxId: BAD });
});
