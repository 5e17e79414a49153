import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, open, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import {
  cleanupDaemonDir,
  type Daemon,
  processesMatching,
  requireArtifacts,
  startDaemon,
  writeConfig,
} from "../../testkit/daemon.ts";
import {
  type ControllerClient,
  footprint,
  mountTmpfs,
  recordsOnDisk,
  runContainer,
} from "../../testkit/fake-daemon.ts";

// Faults against the real daemon and QEMU (TCG) guests: kill -9 of the daemon with 4 sandboxes running (all
// recovered), a VMM SIGSTOPped and one killed while the daemon is down (it still comes up, both are cleaned), kill -9
// of a VMM, a full disk under --dir, and a guest whose agent never answers. containerd's own restart is covered by
// test/e2e/pod.test.ts ("containerd restart with a running pod").
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function daemonIn(prefix: string, edit: (toml: string) => string = (t) => t) {
  requireArtifacts();
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const config = path.join(dir, "config.toml");
  await writeConfig(config);
  writeFileSync(config, edit(readFileSync(config, "utf8")));
  const h = { dir, config, daemon: undefined as Daemon | undefined, client: undefined as ControllerClient | undefined };
  let close = () => {};
  cleanups.push(async () => {
    close();
    await cleanupDaemonDir(h.daemon, dir);
  });
  const start = async () => {
    close();
    const t0 = Date.now();
    h.daemon = await startDaemon(dir, config);
    const up = Date.now() - t0;
    ({ client: h.client, close } = unaryClient(Controller, `unix://${h.daemon.sock}`));
    return up;
  };
  const kill9 = async () => {
    close();
    h.daemon!.proc.kill("SIGKILL");
    if (h.daemon!.proc.exitCode === null) await new Promise((r) => h.daemon!.proc.once("exit", r));
  };
  return { h, start, kill9 };
}

/** Order of the daemon's log lines: recovery is finished before it serves (and before READY=1, sent right after). */
function assertRecoveredBeforeServing(log: string, kept: number, cleaned: number): void {
  const recovery = log.indexOf(`recovery: ${kept} sandboxes kept, ${cleaned} cleaned up`);
  const serving = log.indexOf("serving the sandbox API");
  assert.ok(recovery >= 0, `no 'recovery: ${kept} sandboxes kept, ${cleaned} cleaned up' line:\n${log}`);
  assert.ok(recovery < serving, "the daemon served before recovery finished");
}

test("kill -9 of the daemon with 4 sandboxes running; a VMM stopped across a restart; kill -9 of a VMM", {
  timeout: 900_000,
}, async () => {
  const { h, start, kill9 } = await daemonIn("rel-faults-");
  await start();
  const state = path.join(h.dir, "state");
  const base = footprint(h.daemon!.proc.pid!, state);
  const ids = ["k0", "k1", "k2", "k3"];
  const t0 = Date.now();
  const started = await Promise.all(
    ids.map(async (id) => {
      await h.client!.create({ sandboxId: id });
      return h.client!.start({ sandboxId: id });
    }),
  );
  console.log(`4 sandboxes booted concurrently in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  await kill9();
  for (const s of started) assert.ok(existsSync(`/proc/${s.pid}`), `VMM ${s.pid} outlives the daemon`);
  const up = await start();
  console.log(
    `daemon restart with 4 running sandboxes: serving after ${(up / 1000).toFixed(1)} s (tsx start included)`,
  );
  assertRecoveredBeforeServing(h.daemon!.log(), 4, 0);
  for (const [i, id] of ids.entries()) {
    const st = await h.client!.status({ sandboxId: id });
    assert.equal(st.state, "SANDBOX_READY", id);
    assert.equal(st.pid, started[i]!.pid, id);
  }
  assert.equal((await runContainer(h.dir, started[0]!.address, "after-restart", "echo alive")).out, "alive\n");

  // While the daemon is down one VMM is frozen (recovery must not wait for it past its fail-fast deadlines) and
  // one is killed (its helper must not outlive it).
  const frozen = started[3]!.pid;
  await kill9();
  process.kill(frozen, "SIGSTOP");
  process.kill(started[2]!.pid, "SIGKILL");
  try {
    const upFrozen = await start();
    console.log(`daemon restart with one VMM stopped, one killed: serving after ${(upFrozen / 1000).toFixed(1)} s`);
    assertRecoveredBeforeServing(h.daemon!.log(), 2, 2);
    for (const id of ["k2", "k3"]) {
      assert.equal((await h.client!.status({ sandboxId: id })).state, "SANDBOX_NOTREADY", id);
      assert.deepEqual(processesMatching(path.join(state, id)), [], `${id}: the VMM and its helper are gone`);
      assert.equal(existsSync(path.join(state, id, "task.sock")), false, id);
    }
  } finally {
    try {
      process.kill(frozen, "SIGCONT");
      process.kill(frozen, "SIGKILL");
    } catch {
      // already gone: the daemon killed it
    }
  }

  // kill -9 of a VMM: Wait returns, the sandbox turns NOTREADY, its helpers and task socket are gone.
  const waiting = h.client!.wait({ sandboxId: "k1" });
  process.kill(started[1]!.pid, "SIGKILL");
  assert.notEqual((await waiting).exitStatus, 0);
  assert.equal((await h.client!.status({ sandboxId: "k1" })).state, "SANDBOX_NOTREADY");
  assert.deepEqual(processesMatching(path.join(state, "k1")), []);
  assert.equal(existsSync(path.join(state, "k1/task.sock")), false);
  const recs = await recordsOnDisk(state);
  assert.equal(recs.get("k1")?.state, "stopped");
  assert.equal(recs.get("k2")?.state, "stopped");
  assert.equal(recs.get("k3")?.state, "stopped");

  for (const id of ids) {
    await h.client!.stop({ sandboxId: id, timeoutSecs: 10 });
    await h.client!.shutdown({ sandboxId: id });
  }
  const end = footprint(h.daemon!.proc.pid!, state);
  assert.deepEqual({ ...end, fds: 0 }, { ...base, fds: 0 }, "processes, mounts, taps, netns, files as at the start");
});

test("a full disk under --dir: Create fails clearly, no half-written sandbox.json, existing records intact", {
  timeout: 120_000,
}, async () => {
  const { h } = await daemonIn("rel-diskfull-");
  // --dir (<dir>/fs/state) sits on a 1 MiB tmpfs; the config does not.
  const fs = path.join(h.dir, "fs");
  await mkdir(fs);
  cleanups.push(mountTmpfs(fs, 1024));
  h.daemon = await startDaemon(fs, h.config);
  const { client, close } = unaryClient(Controller, `unix://${h.daemon.sock}`);
  try {
    const state = path.join(fs, "state");
    for (const id of ["d0", "d1"]) await client.create({ sandboxId: id });
    await client.stop({ sandboxId: "d1" });
    const before = await recordsOnDisk(state);

    const filler = await open(path.join(fs, "filler"), "w");
    const chunk = Buffer.alloc(64 * 1024);
    try {
      for (;;) await filler.write(chunk);
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, "ENOSPC");
    }
    await filler.close();

    for (const id of ["d2", "d3"]) {
      await assert.rejects(client.create({ sandboxId: id }), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INTERNAL, e.details);
        assert.match(e.details, new RegExp(`create sandbox ${id}: .*(ENOSPC|no space left)`, "i"));
        return true;
      });
    }
    // Refused creates leave nothing; the existing records are intact and no temp file remains.
    assert.deepEqual((await readdir(state)).sort(), ["d0", "d1"]);
    assert.deepEqual(await recordsOnDisk(state), before);
    for (const id of ["d0", "d1"]) {
      assert.deepEqual(await readdir(path.join(state, id)).then((f) => f.filter((n) => n.endsWith(".tmp"))), []);
    }
    assert.equal((await client.status({ sandboxId: "d0" })).state, "SANDBOX_NOTREADY");
    assert.equal(h.daemon.proc.exitCode, null, "the daemon is still running");

    // Space back: the daemon carries on.
    await rm(path.join(fs, "filler"));
    await client.create({ sandboxId: "d2" });
    for (const id of ["d0", "d1", "d2"]) await client.shutdown({ sandboxId: id });
    assert.deepEqual(await readdir(state), []);
  } finally {
    close();
  }
});

test("a guest whose agent never starts: Start fails within agent_timeout_ms with the console's tail", {
  timeout: 180_000,
}, async () => {
  const timeoutMs = 20_000;
  // The guest runs sleep as PID 1 instead of vmm-task's init: the kernel boots, nothing listens on vsock.
  const { h, start } = await daemonIn("rel-noagent-", (t) =>
    t
      .replace("[sandbox]\n", `[sandbox]\nagent_timeout_ms = ${timeoutMs}\n`)
      .replace("[hypervisor]\n", '[hypervisor]\nkernel_params = "init=/bin/sleep -- 3600"\n'),
  );
  await start();
  const state = path.join(h.dir, "state");
  const base = footprint(h.daemon!.proc.pid!, state);
  await h.client!.create({ sandboxId: "mute" });
  const t0 = Date.now();
  await assert.rejects(h.client!.start({ sandboxId: "mute" }), (e: grpc.ServiceError) => {
    assert.equal(e.code, grpc.status.INTERNAL, e.details);
    assert.match(e.details, /start sandbox mute: the agent did not answer/);
    assert.match(e.details, /agent_timeout_ms = 20000/);
    // The dial's deadline is what is left of agent_timeout_ms after the VMM's start, not the 120 s default.
    const dialed = Number(/within ([\d.]+) s/.exec(e.details)?.[1]);
    assert.ok(dialed > 0 && dialed <= timeoutMs / 1000, `the agent was dialled for ${dialed} s: ${e.details}`);
    assert.match(e.details, /last console lines .*console\.log/);
    assert.match(e.details, /Run \/bin\/sleep as init process/, "the console tail shows what the guest did");
    return true;
  });
  const secs = (Date.now() - t0) / 1000;
  console.log(`Start with a mute agent failed after ${secs.toFixed(1)} s (agent_timeout_ms ${timeoutMs})`);
  assert.equal((await h.client!.status({ sandboxId: "mute" })).state, "SANDBOX_NOTREADY");
  assert.deepEqual(processesMatching(path.join(state, "mute")), [], "QEMU and its helper are gone");
  await h.client!.shutdown({ sandboxId: "mute" });
  assert.deepEqual({ ...footprint(h.daemon!.proc.pid!, state), fds: 0 }, { ...base, fds: 0 });
});
