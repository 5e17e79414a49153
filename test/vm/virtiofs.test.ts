import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Task } from "../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { TtrpcClient } from "../../runtime/ttrpc/index.ts";
import {
  busyboxBundle,
  cleanupDaemonDir,
  type Daemon,
  processesMatching,
  requireArtifacts,
  startDaemon,
  writeConfig,
} from "./harness.ts";

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

after(async () => {
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
  const conn = net.connect(started.address.replace(/^ttrpc\+unix:\/\//, ""));
  await new Promise((r) => conn.once("connect", r));
  const client = new TtrpcClient(conn);
  try {
    const task = client.service(Task);
    const stdout = path.join(dir, "c.stdout");
    execFileSync("mkfifo", [stdout]);
    let out = "";
    const reading = new Promise<void>((resolve) =>
      createReadStream(stdout)
        .on("data", (d) => {
          out += d;
        })
        .on("end", resolve),
    );
    const script = "echo written > /tmp/x; cat /tmp/x";
    await task.create({ id: "c", bundle: await busyboxBundle(dir, ["sh", "-c", script]), stdout });
    const waiting = task.wait({ id: "c" });
    await task.start({ id: "c" });
    assert.equal((await waiting).exitStatus, 0);
    await reading;
    await task.delete({ id: "c" });
    assert.equal(out, "written\n");
  } finally {
    client.close();
  }
  assert.match(readFileSync(path.join(sandboxDir, "console.log"), "utf8"), /share virtiofs mounted/);
  await controller.shutdown({ sandboxId: "fs" });
  assert.deepEqual(processesMatching(sandboxDir), [], "QEMU, virtiofsd and vhost-device-vsock are gone");
});
