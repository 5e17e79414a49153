import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import {
  cleanupDaemonDir,
  type Daemon,
  processesMatching,
  requireArtifacts,
  runContainer,
  startDaemon,
  writeConfig,
} from "../../testkit/daemon.ts";

// share_fs = "VirtioFS": the share reaches the guest through QEMU's virtiofsd instead of QEMU's 9p server, and a
// container's rootfs on it runs as it does over 9p.
const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
let dir: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let close: () => void;

before(async () => {
  requireArtifacts();
  if (!existsSync(VIRTIOFSD)) throw new Error(`${VIRTIOFSD} is missing: install qemu-system-common`);
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-virtiofs-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config, `share_fs = "VirtioFS"\n\n[hypervisor.virtiofsd]\npath = "${VIRTIOFSD}"\n`);
  daemon = await startDaemon(dir, config);
  ({ client: controller, close } = unaryClient(Controller, `unix://${daemon.sock}`));
});

let passed = false;
after(async () => {
  // It has timed out under a loaded CI host and passed on every rerun: leave what it saw for the next time.
  if (!passed && daemon) {
    const tail = (t: string) => t.split("\n").slice(-40).join("\n");
    const consoleLog = path.join(dir, "state/fs/console.log");
    console.log(`daemon log (tail):\n${tail(daemon.log())}`);
    if (existsSync(consoleLog)) console.log(`guest console (tail):\n${tail(readFileSync(consoleLog, "utf8"))}`);
  }
  close?.();
  await cleanupDaemonDir(daemon, dir);
});

test("a pod VM with its share on virtio-fs runs a container from it", { timeout: 240_000 }, async () => {
  await controller.create({ sandboxId: "fs" });
  const started = await controller.start({ sandboxId: "fs" });
  const sandboxDir = path.join(dir, "state/fs");
  assert.match(
    readFileSync(`/proc/${started.pid}/cmdline`, "utf8"),
    /vhost-user-fs/,
    "QEMU has a vhost-user-fs device",
  );
  assert.ok(
    processesMatching(sandboxDir).some((p) => readFileSync(`/proc/${p}/cmdline`, "utf8").includes("virtiofsd")),
    "virtiofsd serves the share",
  );
  const r = await runContainer(dir, started.address, "c", "echo written > /tmp/x; cat /tmp/x");
  assert.deepEqual(r, { out: "written\n", status: 0 });
  // The pod's files reach containers over virtio-fs as over 9p.
  const etc = await runContainer(dir, started.address, "etc", "cat /etc/resolv.conf /etc/hostname");
  const share = (f: string) => readFileSync(path.join(sandboxDir, "mounts", f), "utf8");
  assert.deepEqual(etc, { out: share("resolv.conf") + share("hostname"), status: 0 });
  assert.match(readFileSync(path.join(sandboxDir, "console.log"), "utf8"), /share virtiofs mounted/);
  await controller.shutdown({ sandboxId: "fs" });
  assert.deepEqual(processesMatching(sandboxDir), [], "QEMU, virtiofsd and vhost-device-vsock are gone");
  passed = true;
});
