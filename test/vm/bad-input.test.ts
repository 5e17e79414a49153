import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import {
  cleanupDaemonDir,
  type Daemon,
  processesMatching,
  requireArtifacts,
  startDaemon,
  writeConfig,
} from "../../testkit/daemon.ts";

// Every kind of bad request against a real daemon (from source) whose configured kernel is missing: each gets a
// clear error naming what was wrong, the daemon stays up, and nothing is left behind on the host.
let dir: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let close: () => void;

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-bad-input-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config);
  // The kernel goes missing after the config was accepted (an operator removed it): Start must say so.
  const text = readFileSync(config, "utf8").replace(/kernel_path = "[^"]*"/, `kernel_path = "${dir}/vmlinux.bin"`);
  await writeFile(config, text);
  daemon = await startDaemon(dir, config);
  ({ client: controller, close } = unaryClient(Controller, `unix://${daemon.sock}`));
});

after(async () => {
  close?.();
  await cleanupDaemonDir(daemon, dir);
});

/** What a leak would show: the daemon's fds, processes naming the state dir, mounts under it, kuasar taps. */
function footprint() {
  const fds = readdirSync(`/proc/${daemon.proc.pid}/fd`).length;
  const procs = processesMatching(path.join(dir, "state")).length;
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.split(" ")[4]?.startsWith(dir)).length;
  const taps = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
    .split("\n")
    .filter((l) => l.includes("tap_kua")).length;
  return { fds, procs, mounts, taps };
}

const code = (c: grpc.status, re: RegExp) => (e: grpc.ServiceError) => {
  assert.equal(e.code, c, `${grpc.status[e.code]}: ${e.details}`);
  assert.match(e.details, re);
  return true;
};

test("bad requests get clear errors, the daemon stays up, nothing leaks", { timeout: 120_000 }, async () => {
  await controller.platform({ sandboxId: "" }).catch(() => undefined);
  // A first (failing) Start makes what the daemon keeps for its lifetime once used, such as libuv's one inotify fd
  // (the guest console follower watches the sandbox directory): the footprint is counted after it.
  await controller.create({ sandboxId: "warm-up" });
  await controller.start({ sandboxId: "warm-up" }).catch(() => undefined);
  await controller.shutdown({ sandboxId: "warm-up" });
  const before = footprint();

  for (const m of ["start", "status", "stop", "wait", "shutdown", "metrics", "platform"] as const) {
    await assert.rejects(
      (controller[m] as (r: { sandboxId: string }) => Promise<unknown>)({ sandboxId: "no-such-pod" }),
      code(grpc.status.NOT_FOUND, /no-such-pod/),
    );
  }
  for (const id of ["a/b", "../etc", "..", "x".repeat(300), "", "tab\there"]) {
    await assert.rejects(controller.create({ sandboxId: id }), code(grpc.status.INVALID_ARGUMENT, /sandbox id/));
  }
  await assert.rejects(
    controller.create({
      sandboxId: "p1",
      options: { typeUrl: "runtime.v1.PodSandboxConfig", value: Buffer.from([0xff, 0xff]) },
    }),
    code(grpc.status.INVALID_ARGUMENT, /p1: options are not a valid PodSandboxConfig/),
  );
  await assert.rejects(
    controller.create({ sandboxId: "p1", options: { typeUrl: "example.Other", value: Buffer.from([1]) } }),
    code(grpc.status.INVALID_ARGUMENT, /options type 'example.Other'/),
  );
  const badParent = toBinary(
    PodSandboxConfigSchema,
    create(PodSandboxConfigSchema, { linux: { cgroupParent: "../x" } }),
  );
  await assert.rejects(
    controller.create({ sandboxId: "p1", options: { typeUrl: "runtime.v1.PodSandboxConfig", value: badParent } }),
    code(grpc.status.INVALID_ARGUMENT, /cgroup_parent "..\/x"/),
  );
  assert.deepEqual(await readdir(path.join(dir, "state")), [], "refused creates leave no directory");

  await controller.create({ sandboxId: "p1" });
  await assert.rejects(controller.create({ sandboxId: "p1" }), code(grpc.status.ALREADY_EXISTS, /p1 already exists/));
  await assert.rejects(controller.start({ sandboxId: "p1" }), code(grpc.status.INTERNAL, /vmlinux\.bin/));
  await assert.rejects(controller.metrics({ sandboxId: "p1" }), code(grpc.status.FAILED_PRECONDITION, /not running/));
  await controller.shutdown({ sandboxId: "p1" });
  assert.equal(existsSync(path.join(dir, "state/p1")), false);

  assert.equal(daemon.proc.exitCode, null, "the daemon is still running");
  assert.deepEqual(footprint(), before);
});
