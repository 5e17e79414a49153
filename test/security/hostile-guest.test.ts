import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { appendFile, copyFile, mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { bundleNode } from "../../pipeline/lib/bundle.ts";
import { writeNewc } from "../../pipeline/rootfs/cpio.ts";
import { listTree } from "../../pipeline/rootfs/tree.ts";
import { TaskOOMSchema } from "../../runtime/protos/gen/containerd/events/task_pb.ts";
import { Task } from "../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { TtrpcClient } from "../../runtime/ttrpc/index.ts";
import { bin, busyboxBundle, repo, requireArtifacts } from "../../testkit/daemon.ts";
import { rssKiB, runTask, Scene } from "../../testkit/scene.ts";

// A guest whose agent is the attacker's (test/security/fixtures/hostile-agent.ts, put into the initrd in place of
// vmm-task): forged events for other sandboxes, namespaces and topics; stdout sent without credit; a console
// flood; a ttrpc frame that claims 4 GiB. Beside it a sandbox with the real agent runs a container. The daemon's
// memory stays bounded, it keeps answering, the other sandbox's exit event arrives, and containerd is told nothing
// the hostile guest made up about anything but its own container.
let scene: Scene;
const CONSOLE_CAP_MB = 1;
const TASK_TOPICS = new Set(["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/tasks/oom"]);

/**
 * kuasar.initrd with the hostile agent as vmm-task (and its startup snapshot) and the real one kept beside it
 * (initramfs archives concatenate).
 */
async function hostileInitrd(dir: string, out: string): Promise<void> {
  const root = path.join(dir, "overlay");
  const agentDir = path.join(root, "usr/lib/vmm-task");
  await mkdir(agentDir, { recursive: true });
  await bundleNode(path.join(repo, "test/security/fixtures/hostile-agent.ts"), path.join(agentDir, "vmm-task.js"));
  await copyFile(path.join(bin, "vmm-task"), path.join(agentDir, "real-vmm-task.js"));
  // The guest's init starts node from the agent's startup snapshot: this one runs the hostile bundle instead. bin/node
  // is the same pinned, stripped node as the guest's, so it can build a blob the guest accepts.
  const wrapper = path.join(dir, "hostile-snapshot.cjs");
  await writeFile(
    wrapper,
    'const { createRequire } = require("node:module");\n' +
      'require("node:v8").startupSnapshot.setDeserializeMainFunction(() => createRequire("/usr/lib/vmm-task/")("/usr/lib/vmm-task/vmm-task.js"));\n',
  );
  execFileSync(
    path.join(bin, "node"),
    ["--snapshot-blob", path.join(agentDir, "vmm-task.blob"), "--build-snapshot", wrapper],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  const cpio = path.join(dir, "overlay.cpio");
  await writeNewc(root, await listTree(root), cpio, 0);
  await copyFile(path.join(bin, "kuasar.initrd"), out);
  // The kernel skips zero padding between archives; the next one must start 4-byte aligned.
  await appendFile(out, Buffer.alloc((4 - (statSync(out).size % 4)) % 4));
  await appendFile(out, await readFile(cpio));
}

before(async () => {
  requireArtifacts(["vmlinux.bin", "kuasar.initrd", "vmm-task", "node"]);
  const work = await mkdtemp(path.join(os.tmpdir(), "sec-hostile-initrd-"));
  const initrd = path.join(work, "hostile.initrd");
  await hostileInitrd(work, initrd);
  scene = await Scene.start("sec-hostile-", (c) =>
    c
      .replace("[sandbox]\n", `[sandbox]\nconsole_log_max_mb = ${CONSOLE_CAP_MB}\n`)
      .replace(/image_path = .*\n/, `image_path = ""\ninitrd_path = "${initrd}"\n`),
  );
});

after(async () => {
  await scene?.close();
});

test("a hostile agent costs the daemon bounded memory and no other sandbox anything", {
  timeout: 400_000,
}, async () => {
  const bystander = `ttrpc+unix://${path.join(scene.sandboxDir("bystander"), "task.sock")}`;
  const hostile = await scene.pod("hostile");
  const pid = scene.daemon.proc.pid!;
  const rss0 = rssKiB(pid);
  let rssMax = rss0;
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, rssKiB(pid));
  }, 200);
  const t0 = Date.now();
  try {
    // The other sandbox's container runs while the hostile guest does its worst.
    const other = runTask(
      bystander,
      "bystander-c1",
      await busyboxBundle(path.join(scene.dir, "by"), ["sh", "-c", "sleep 8; exit 3"]),
    );

    // The hostile container: its stdout goes to a FIFO nobody reads, and its guest sends without credit.
    const conn = net.connect(hostile.replace(/^ttrpc\+unix:\/\//, ""));
    await new Promise((r, j) => conn.once("connect", r).once("error", j));
    const task = new TtrpcClient(conn).service(Task);
    const stdout = path.join(scene.dir, "h1.stdout");
    execFileSync("mkfifo", [stdout]);
    await task.create({ id: "h1", bundle: await busyboxBundle(path.join(scene.dir, "h"), ["true"]), stdout });
    await task.start({ id: "h1" });

    assert.equal((await other).status, 3, "the other sandbox's container ran to its end");
    assert.equal((await scene.controller.status({ sandboxId: "bystander" })).state, "SANDBOX_READY");

    // A reply frame that claims 4 GiB: the call fails instead of the daemon waiting for (or allocating) it.
    await assert.rejects(task.stats({ id: "h1" }, { timeoutMs: 30_000 }), (e: Error) => !/deadline/i.test(e.message));
    assert.equal(scene.daemon.proc.exitCode, null, "the daemon is still running");
    assert.equal((await scene.controller.status({ sandboxId: "bystander" })).state, "SANDBOX_READY");
  } finally {
    clearInterval(sampler);
  }
  const seconds = (Date.now() - t0) / 1000;

  // Every check is made and reported together, so a run against a daemon without the defences shows them all.
  const problems: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) problems.push(what);
  };
  check(rssMax - rss0 < 64 * 1024, `the daemon grew by ${rssMax - rss0} KiB under attack`);
  check(/h1\/init\/stdout: .*credit/.test(scene.daemon.log()), "the uncredited stdout was not cut off");

  const consoleBytes = ["console.log", "console.log.1"]
    .map((f) => path.join(scene.sandboxDir("hostile"), f))
    .filter((f) => existsSync(f))
    .reduce((n, f) => n + statSync(f).size, 0);
  check(consoleBytes <= 2 * CONSOLE_CAP_MB * 1048576, `the console flood kept ${consoleBytes} bytes on disk`);

  for (const e of scene.events.received) {
    check(TASK_TOPICS.has(e.topic), `containerd was sent topic ${e.topic}`);
    check(e.namespace === "k8s.io", `containerd was sent an event in namespace ${e.namespace}`);
  }
  const exits = scene.events.exits("bystander-c1");
  check(exits.length === 1 && exits[0] === 3, `exits reported for the other sandbox's container: ${exits.join(", ")}`);
  const ooms = scene.events.received.filter((e) => e.topic === "/tasks/oom" && e.event);
  const oomOf = (e: (typeof ooms)[number]) => {
    try {
      return fromBinary(TaskOOMSchema, e.event!.value).containerId;
    } catch {
      return "(undecodable)";
    }
  };
  check(
    ooms.every((e) => oomOf(e) === "h1"),
    "an OOM event named another container",
  );
  // The forwarder lets a burst of 1000 through, then 200 a second.
  check(ooms.length <= 1000 + 200 * (seconds + 5), `${ooms.length} OOM events reached containerd in ${seconds} s`);
  assert.deepEqual([...new Set(problems)], []);
  await scene.assertUnharmed();
});
