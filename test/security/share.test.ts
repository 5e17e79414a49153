import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import {
  busyboxBundle,
  cleanupDaemonDir,
  type Daemon,
  requireArtifacts,
  startDaemon,
  writeConfig,
} from "../vm/harness.ts";
import {
  bundleWithVolume,
  EventsSink,
  guestRoot,
  MountWatch,
  makeCanary,
  makeVolume,
  rssKiB,
  runTask,
  treeDigest,
} from "./harness.ts";

// Guest root against the share: every name the host will work on in the sandbox's directory is planted first with
// a link into a host tree (the canary) or a FIFO, then the host does its normal work (a container with a volume and
// a file bind). Nothing outside the sandbox directory may change or be mounted on, the volume keeps its data, and
// another sandbox keeps answering.
let dir: string;
let state: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;
let events: EventsSink;
let watch: MountWatch;
const canary = () => path.join(dir, "canary");

const podConfig = (hostname: string) => ({
  typeUrl: "runtime.v1.PodSandboxConfig",
  value: toBinary(PodSandboxConfigSchema, create(PodSandboxConfigSchema, { hostname })),
});

async function startPod(id: string): Promise<string> {
  await controller.create({ sandboxId: id, options: podConfig(id) });
  return (await controller.start({ sandboxId: id })).address;
}

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "sec-share-"));
  state = path.join(dir, "state");
  await makeCanary(canary());
  const config = path.join(dir, "config.toml");
  await writeConfig(config, 'kernel_params = "task.debug"\n');
  events = new EventsSink(path.join(dir, "no-containerd.sock.ttrpc"));
  await events.listen();
  watch = new MountWatch();
  await watch.ready;
  daemon = await startDaemon(dir, config);
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${daemon.sock}`));
});

after(async () => {
  watch?.stop();
  closeController?.();
  await events?.close();
  await cleanupDaemonDir(daemon, dir);
});

test("links and FIFOs planted by guest root at every name the host uses are never followed", {
  timeout: 400_000,
}, async () => {
  const before = await treeDigest(canary());
  await startPod("bystander");
  const address = await startPod("victim");
  const victim = path.join(state, "victim");
  const rss0 = rssKiB(daemon.proc.pid!);

  // Every storage<N> the host will allocate, the next container bundles, and the share files: links to host
  // directories and files, FIFOs (which would block the daemon's open), a flood of files at the top.
  const planted = await guestRoot(
    victim,
    [
      "cd /run/kuasar/state",
      `for i in 0 1 2 3 4 5 6 7; do ln -s ${canary()}/dir$((i % 2)) storage$i; done`,
      "for i in 8 9 10 11 12 13; do mkfifo storage$i; done",
      `ln -s ${canary()}/bundle-target c1`,
      `ln -s ${canary()}/etc c2`,
      `rm -f hosts && ln -s ${canary()}/etc/passwd hosts`,
      "dd if=/dev/zero of=fill bs=1M count=32 2>&1 | tail -1",
      "ls -la /run/kuasar/state",
    ].join("; ") + " 2>&1",
  );
  const volume = await makeVolume(path.join(dir, "volume"));
  try {
    await writeFile(path.join(dir, "termination-log"), "");
    const bundle = await bundleWithVolume(
      path.join(dir, "b1"),
      "echo from-guest > /vol/written; echo done > /dev/termination-log; cat /vol/data",
      volume.dir,
      path.join(dir, "termination-log"),
    );
    // The escape is checked before the container's own outcome: a daemon that followed a link may still fail.
    const r = await runTask(address, "c1", bundle, { timeoutMs: 60_000 }).catch((e: Error) => e);
    assert.deepEqual(
      watch.outside([path.join(state, "victim"), path.join(state, "bystander"), volume.dir]),
      [],
      `every mount the daemon made is inside a sandbox directory (guest said: ${planted})`,
    );
    assert.equal(await treeDigest(canary()), before, `nothing in the host tree changed (guest said: ${planted})`);
    await volume.check();
    assert.ok(!(r instanceof Error), `the container ran: ${(r as Error).message}`);
    assert.equal(r.status, 0);
    assert.equal(r.stdout, "volume data\n");
    assert.equal(readFileSync(path.join(volume.dir, "written"), "utf8"), "from-guest\n", "a rw volume is writable");
    assert.equal(readFileSync(path.join(dir, "termination-log"), "utf8"), "done\n", "a file bind is writable");
    assert.equal((await controller.status({ sandboxId: "bystander" })).state, "SANDBOX_READY");
    assert.ok(rssKiB(daemon.proc.pid!) - rss0 < 64 * 1024, "the daemon's memory stayed bounded");
  } finally {
    volume.remove();
  }
});

test("the share's top level is read-only to guest root; inside a container rootfs the guest still writes", {
  timeout: 200_000,
}, async () => {
  const victim = path.join(state, "victim");
  const out = await guestRoot(
    victim,
    "cd /run/kuasar/state; touch new-entry 2>&1; mkdir new-dir 2>&1; ls -A /run/kuasar/state | wc -l",
  );
  assert.match(out, /Read-only file system/);
  assert.equal(existsSync(path.join(victim, "mounts/new-entry")), false);
  assert.deepEqual(
    (await readdir(path.join(victim, "mounts"))).filter((n) => n.startsWith("new")),
    [],
  );
  const address = `ttrpc+unix://${path.join(victim, "task.sock")}`;
  const rootfsOnly = await busyboxBundle(path.join(dir, "b3"), [
    "sh",
    "-c",
    "echo written > /rootfs-file && cat /rootfs-file",
  ]);
  const r = await runTask(address, "c3", rootfsOnly);
  assert.equal(r.stdout, "written\n");
});

test("a container bundle swapped for a link after Create is not followed at Delete", { timeout: 200_000 }, async () => {
  const victim = path.join(state, "victim");
  const address = `ttrpc+unix://${path.join(victim, "task.sock")}`;
  const before = await treeDigest(canary());
  await mkdir(path.join(dir, "empty-vol2"), { recursive: true });
  const bundle = await bundleWithVolume(
    path.join(dir, "b4"),
    "sleep 5",
    path.join(dir, "empty-vol2"),
    path.join(dir, "termination-log"),
  );
  const run = runTask(address, "c4", bundle);
  await new Promise((r) => setTimeout(r, 1000));
  const out = await guestRoot(
    victim,
    `cd /run/kuasar/state; rm -rf c4 2>&1; ln -sfn ${canary()}/etc c4 2>&1; ln -sf ${canary()}/file c4/config.json 2>&1; true`,
  );
  await run;
  assert.equal(await treeDigest(canary()), before, `the host tree is unchanged (guest said: ${out})`);
});
