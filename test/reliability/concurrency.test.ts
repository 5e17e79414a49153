import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { type ControllerClient, FakeLauncher, fakeDaemon, statusVersusDisk } from "../../testkit/fake-daemon.ts";
import { fuzzSeed, rng, subSeed, withSeed } from "../../testkit/rng.ts";

// 8 clients issue interleaved Create/Start/Status/Stop/Shutdown (and Wait) on ids they share and on ids of their
// own, over the real gRPC socket, against the daemon's SandboxManager on a launcher whose VMs take a few ms to start
// and stop. Checked: every answer is one the sandbox's state allows, nothing deadlocks, Status agrees with
// sandbox.json, a VM runs exactly for each running sandbox, and nothing is left after.
const SEED = fuzzSeed("concurrency");
const CLIENTS = 8;
const OPS_PER_CLIENT = 2500;
const SHARED = ["s0", "s1", "s2"];
const BOUND_MS = 240_000;

/** Answers an operation may get when another client races it; anything else is a bug. */
const ALLOWED: Record<string, grpc.status[]> = {
  create: [grpc.status.ALREADY_EXISTS],
  start: [grpc.status.NOT_FOUND, grpc.status.FAILED_PRECONDITION],
  status: [grpc.status.NOT_FOUND],
  stop: [grpc.status.NOT_FOUND],
  shutdown: [grpc.status.NOT_FOUND],
  wait: [grpc.status.NOT_FOUND, grpc.status.DEADLINE_EXCEEDED],
};
const OPS = Object.keys(ALLOWED);

async function client(c: ControllerClient, n: number, random: () => number, pending: Set<string>, bad: string[]) {
  const int = (k: number) => Math.floor(random() * k);
  const own = [`c${n}-a`, `c${n}-b`];
  for (let i = 0; i < OPS_PER_CLIENT; i++) {
    const id = random() < 0.6 ? SHARED[int(SHARED.length)]! : own[int(own.length)]!;
    const op = OPS[int(OPS.length)]!;
    const tag = `client ${n} op ${i}: ${op} ${id}`;
    pending.add(tag);
    try {
      const call = c[op as keyof ControllerClient] as (r: unknown, o?: unknown) => Promise<unknown>;
      const req = op === "stop" ? { sandboxId: id, timeoutSecs: 1 } : { sandboxId: id };
      await call(req, op === "wait" ? { deadlineMs: 20 } : undefined);
      if (op === "status" || op === "start") {
        const st = (await c.status({ sandboxId: id }).catch(() => undefined)) as { state: string } | undefined;
        if (op === "start" && st && st.state !== "SANDBOX_READY" && st.state !== "SANDBOX_NOTREADY") {
          bad.push(`${tag}: Status after Start says ${st.state}`);
        }
      }
    } catch (err) {
      const e = err as grpc.ServiceError;
      if (!ALLOWED[op]!.includes(e.code)) bad.push(`${tag}: ${grpc.status[e.code]}: ${e.details}`);
    } finally {
      pending.delete(tag);
    }
  }
}

test(
  `${CLIENTS} clients interleave Create/Start/Status/Stop/Shutdown on shared and own ids`,
  { timeout: BOUND_MS + 60_000 },
  () => withSeed(SEED, interleave),
);

async function interleave(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "rel-conc-"));
  const launcher = new FakeLauncher(rng(subSeed(SEED, CLIENTS)), 4);
  const d = await fakeDaemon(dir, launcher);
  const state = path.join(dir, "state");
  try {
    const pending = new Set<string>();
    const bad: string[] = [];
    const t0 = Date.now();
    // Separate connections, as separate CRI callers would have.
    const conns = Array.from({ length: CLIENTS }, () => unaryClient(Controller, `unix://${d.sock}`));
    let timer: NodeJS.Timeout | undefined;
    const deadlock = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`not finished within ${BOUND_MS / 1000} s; stuck: ${[...pending].join("; ")}`)),
        BOUND_MS,
      );
    });
    await Promise.race([
      Promise.all(conns.map((c, n) => client(c.client, n, rng(subSeed(SEED, n)), pending, bad))),
      deadlock,
    ]).finally(() => clearTimeout(timer));
    for (const c of conns) c.close();
    console.log(`concurrency: ${CLIENTS * OPS_PER_CLIENT} operations in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} answers the state did not allow`);

    const ids = [...SHARED, ...Array.from({ length: CLIENTS }, (_, n) => [`c${n}-a`, `c${n}-b`]).flat()];
    assert.deepEqual(await statusVersusDisk(d.client, state, ids), []);
    const live = new Set(d.manager.list().map((s) => s.id));
    for (const id of launcher.vms.keys()) {
      assert.ok(live.has(id), `a VM runs for ${id}, which the daemon no longer knows (leaked)`);
    }
    const running = d.manager.list().filter((s) => s.state === "running");
    assert.equal(launcher.vms.size, running.length, "one VM per running sandbox");
    for (const id of live) await d.client.shutdown({ sandboxId: id });
    assert.equal(launcher.vms.size, 0);
    assert.equal(launcher.started, launcher.released, "every VM started was released once");
    assert.deepEqual(await readdir(state), []);
  } finally {
    d.close();
    await rm(dir, { recursive: true, force: true });
  }
}
