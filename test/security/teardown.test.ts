import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { procStartTime } from "../../runtime/sandboxer/hypervisor/process.ts";
import { cleanupDaemonDir, type Daemon, requireArtifacts, startDaemon, writeConfig } from "../vm/harness.ts";
import { bundleWithVolume, makeVolume, runTask } from "./harness.ts";

// Teardown after the daemon lost track of a sandbox while a container with a host volume ran in it: a recovery that
// fails (the guest does not answer: a frozen VMM here, a hostile guest in life) and a sandbox.json that cannot be
// read. Whatever the state, the container's mounts go, the removal of the sandbox directory never descends into the
// volume, and the volume keeps its data and its own submount.
let dir: string;
let config: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;
const volumes: Array<Awaited<ReturnType<typeof makeVolume>>> = [];

function connect() {
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${daemon.sock}`));
}

const mountsUnder = (p: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m === p || m.startsWith(`${p}/`));

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "sec-teardown-"));
  config = path.join(dir, "config.toml");
  await writeConfig(config);
  daemon = await startDaemon(dir, config);
  connect();
});

after(async () => {
  closeController?.();
  await cleanupDaemonDir(daemon, dir);
  for (const v of volumes) v.remove();
});

async function podWithVolume(id: string): Promise<{ pid: number; volume: (typeof volumes)[number] }> {
  await controller.create({
    sandboxId: id,
    options: {
      typeUrl: "runtime.v1.PodSandboxConfig",
      value: toBinary(PodSandboxConfigSchema, create(PodSandboxConfigSchema, { hostname: id })),
    },
  });
  const started = await controller.start({ sandboxId: id });
  const volume = await makeVolume(path.join(dir, `volume-${id}`));
  volumes.push(volume);
  await writeFile(path.join(dir, `termination-log-${id}`), "");
  const bundle = await bundleWithVolume(
    path.join(dir, `bundle-${id}`),
    "sleep 600",
    volume.dir,
    path.join(dir, `termination-log-${id}`),
  );
  await runTask(started.address, `${id}-c`, bundle, { keep: true });
  assert.ok(
    mountsUnder(path.join(dir, "state", id)).some((m) => m.endsWith("/sub")),
    "the volume is in the share",
  );
  return { pid: started.pid, volume };
}

test("failed recovery and an unreadable sandbox.json free a volume's mounts without touching its data", {
  timeout: 400_000,
}, async () => {
  const frozen = await podWithVolume("frozen");
  const unreadable = await podWithVolume("unreadable");

  daemon.proc.kill("SIGKILL");
  await new Promise((r) => daemon.proc.once("exit", r));
  closeController();
  // The guest that does not answer within recovery's deadline; and a record nobody can parse.
  process.kill(frozen.pid, "SIGSTOP");
  await writeFile(path.join(dir, "state/unreadable/sandbox.json"), "{ not json");
  daemon = await startDaemon(dir, config);
  connect();
  assert.match(daemon.log(), /sandbox frozen cannot be recovered/);

  for (const [id, pod] of [
    ["frozen", frozen],
    ["unreadable", unreadable],
  ] as const) {
    assert.deepEqual(mountsUnder(path.join(dir, "state", id)), [], `nothing of ${id} stays mounted`);
    await pod.volume.check();
    assert.equal(await procStartTime(pod.pid), undefined, `${id}'s VMM is gone (or a zombie)`);
  }
  assert.equal(existsSync(path.join(dir, "state/unreadable")), false, "the unreadable sandbox's directory is gone");

  assert.equal((await controller.status({ sandboxId: "frozen" })).state, "SANDBOX_NOTREADY");
  await controller.shutdown({ sandboxId: "frozen" });
  assert.equal(existsSync(path.join(dir, "state/frozen")), false);
  await frozen.volume.check();
  await unreadable.volume.check();
});
