import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { cleanupDaemonDir, type Daemon, requireArtifacts, startDaemon, writeConfig } from "../../testkit/daemon.ts";
import { type ControllerClient, footprint, runContainer, settledFds } from "../../testkit/fake-daemon.ts";

// 100 create/destroy cycles of a sandbox with a container on the real daemon and QEMU (TCG), 4 sandboxes at a time:
// Create + Start, a container through the sandbox's task API, Stop, Shutdown. After them the daemon holds no more
// fds than before, and no process, mount, tap, netns or file under --dir is left.
const CYCLES = Number(process.env.RELIABILITY_CYCLES ?? 100);
const PARALLEL = 4;

let dir: string;
let daemon: Daemon | undefined;
let client: ControllerClient;
let close = () => {};

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "rel-cycles-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config);
  daemon = await startDaemon(dir, config);
  ({ client, close } = unaryClient(Controller, `unix://${daemon.sock}`));
});

after(async () => {
  close();
  await cleanupDaemonDir(daemon, dir);
});

test(`${CYCLES} create/start/container/stop/shutdown cycles, ${PARALLEL} at a time: nothing leaks`, {
  timeout: 1_500_000,
}, async () => {
  const state = path.join(dir, "state");
  const pid = daemon!.proc.pid!;
  // One cycle first, so lazily opened handles (event publisher, logs) are in the baseline, not counted as leaks.
  const cycle = async (n: number) => {
    const id = `cycle-${n}`;
    await client.create({ sandboxId: id });
    const started = await client.start({ sandboxId: id });
    const r = await runContainer(dir, started.address, `c-${n}`, `echo cycle ${n}`);
    assert.deepEqual(r, { out: `cycle ${n}\n`, status: 0 }, id);
    await client.stop({ sandboxId: id, timeoutSecs: 5 });
    await client.shutdown({ sandboxId: id });
  };
  await cycle(0);
  const base = footprint(pid, state);
  const t0 = Date.now();
  let next = 1;
  let done = 0;
  const worker = async () => {
    while (next < CYCLES) {
      await cycle(next++);
      if (++done % 20 === 0) console.log(`cycles: ${done} done after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  const secs = (Date.now() - t0) / 1000;
  console.log(
    `cycles: ${CYCLES} in ${secs.toFixed(0)} s (${(secs / (CYCLES - 1)).toFixed(1)} s each, ${PARALLEL} at a time)`,
  );
  await settledFds(pid, base.fds);
  const end = footprint(pid, state);
  assert.deepEqual(end, base, `before: ${JSON.stringify(base)}, after: ${JSON.stringify(end)}`);
  assert.equal(daemon!.proc.exitCode, null);
  assert.doesNotMatch(daemon!.log(), /^(<\d>)?\[\S+ ERROR /m, "the daemon logged no error");
});
