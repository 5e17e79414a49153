import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { procStartTime } from "../../runtime/sandboxer/hypervisor/process.ts";
import { requireArtifacts } from "../../testkit/daemon.ts";
import { bundleWithVolume, type makeVolume, runTask, Scene } from "../../testkit/scene.ts";

// Teardown after the daemon lost track of a sandbox while a container with a host volume ran in it: a recovery that
// fails (the guest does not answer: a frozen VMM here, a hostile guest in life) and a sandbox.json that cannot be
// read. Whatever the state, the container's mounts go, the removal of the sandbox directory never descends into the
// volume, and the volume keeps its data and its own submount.
let scene: Scene;
const volumes: Array<Awaited<ReturnType<typeof makeVolume>>> = [];

const mountsUnder = (p: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m === p || m.startsWith(`${p}/`));

before(async () => {
  requireArtifacts();
  scene = await Scene.start("sec-teardown-");
});

after(async () => {
  await scene?.close();
  for (const v of volumes) v.remove();
});

async function podWithVolume(id: string): Promise<{ pid: number; volume: (typeof volumes)[number] }> {
  const address = await scene.pod(id);
  const pid = (await scene.controller.status({ sandboxId: id })).pid;
  const volume = await scene.volume(`volume-${id}`);
  volumes.push(volume);
  await writeFile(path.join(scene.dir, `termination-log-${id}`), "");
  const bundle = await bundleWithVolume(
    path.join(scene.dir, `bundle-${id}`),
    "sleep 600",
    volume.dir,
    path.join(scene.dir, `termination-log-${id}`),
  );
  await runTask(address, `${id}-c`, bundle, { keep: true });
  assert.ok(
    mountsUnder(scene.sandboxDir(id)).some((m) => m.endsWith("/sub")),
    "the volume is in the share",
  );
  return { pid, volume };
}

test("failed recovery and an unreadable sandbox.json free a volume's mounts without touching its data", {
  timeout: 400_000,
}, async () => {
  const frozen = await podWithVolume("frozen");
  const unreadable = await podWithVolume("unreadable");

  await scene.killDaemon();
  // The guest that does not answer within recovery's deadline; and a record nobody can parse.
  process.kill(frozen.pid, "SIGSTOP");
  await writeFile(path.join(scene.sandboxDir("unreadable"), "sandbox.json"), "{ not json");
  await scene.startDaemon();
  assert.match(scene.daemon.log(), /sandbox frozen cannot be recovered/);

  for (const [id, pod] of [
    ["frozen", frozen],
    ["unreadable", unreadable],
  ] as const) {
    assert.deepEqual(mountsUnder(scene.sandboxDir(id)), [], `nothing of ${id} stays mounted`);
    await pod.volume.check();
    assert.equal(await procStartTime(pod.pid), undefined, `${id}'s VMM is gone (or a zombie)`);
  }
  assert.equal(existsSync(scene.sandboxDir("unreadable")), false, "the unreadable sandbox's directory is gone");

  assert.equal((await scene.controller.status({ sandboxId: "frozen" })).state, "SANDBOX_NOTREADY");
  await scene.controller.shutdown({ sandboxId: "frozen" });
  assert.equal(existsSync(scene.sandboxDir("frozen")), false);
  await frozen.volume.check();
  await unreadable.volume.check();
  await scene.assertUnharmed(volumes.map((v) => v.dir));
});
