import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { logger } from "../../../../runtime/log/log.ts";
import { SandboxService } from "../../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { connectAgent } from "../../../../runtime/sandboxer/agent.ts";
import type { LifecycleMetrics, RecoveryOutcome, StartPhase } from "../../../../runtime/sandboxer/metrics/observer.ts";
import { SandboxManager } from "../../../../runtime/sandboxer/sandbox/manager.ts";
import type { ExitInfo, Launcher, SandboxRecord } from "../../../../runtime/sandboxer/sandbox/record.ts";
import { Code, TtrpcError, TtrpcServer } from "../../../../runtime/ttrpc/index.ts";

/** Everything the lifecycle reported. */
class Recorder implements LifecycleMetrics {
  phases: StartPhase[] = [];
  stops: number[] = [];
  recoveries: RecoveryOutcome[] = [];
  agentErrors: string[] = [];
  startPhase(phase: StartPhase, ms: number) {
    assert.ok(ms >= 0);
    this.phases.push(phase);
  }
  stopped(ms: number) {
    this.stops.push(ms);
  }
  recovery(outcome: RecoveryOutcome) {
    this.recoveries.push(outcome);
  }
  agentCallFailed(method: string, code: string) {
    this.agentErrors.push(`${method} ${code}`);
  }
}

/** VMs as promises; `pids` says which pid each sandbox's "VMM" has, `keep` which ones recover. */
class FakeLauncher implements Launcher {
  exits = new Map<string, (e: ExitInfo) => void>();
  constructor(
    private readonly pids: Record<string, number> = {},
    private readonly keep: string[] = [],
  ) {}
  async prepare() {}
  async start(rec: SandboxRecord, dir: string) {
    return { pid: this.pids[rec.id] ?? 4242, taskAddress: `ttrpc+unix://${dir}/task.sock`, runtime: {} };
  }
  waitExit(rec: SandboxRecord) {
    return new Promise<ExitInfo>((resolve) => this.exits.set(rec.id, resolve));
  }
  async stop(rec: SandboxRecord) {
    this.exits.get(rec.id)?.({ exitStatus: 0, exitedAt: new Date() });
  }
  async release() {}
  async stats() {
    return undefined;
  }
  async update() {}
  async discard() {}
  async recover(rec: SandboxRecord) {
    return this.keep.includes(rec.id) ? { ok: true as const } : { ok: false as const, reason: "agent did not answer" };
  }
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "lifecycle-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function deadPid(): Promise<number> {
  const child = spawn("true");
  await new Promise((r) => child.once("exit", r));
  await new Promise((r) => setTimeout(r, 50));
  return child.pid!;
}

test("Start reports its total, Stop of a running sandbox its duration; a created one's Stop is not a VM stop", async () => {
  const m = new Recorder();
  const mgr = new SandboxManager(path.join(dir, "start-stop"), new FakeLauncher(), logger("test"), m);
  await mgr.create({ id: "pod-1", netnsPath: "", annotations: {}, labels: {} });
  await mgr.create({ id: "pod-2", netnsPath: "", annotations: {}, labels: {} });
  await mgr.start("pod-1");
  assert.deepEqual(m.phases, ["total"]);
  await mgr.stop("pod-1", 1000);
  await mgr.stop("pod-2", 1000);
  assert.equal(m.stops.length, 1);
});

test("recovery outcomes: recovered, killed (its VMM ran), lost (its VMM had exited, or its record is unreadable)", async () => {
  const root = path.join(dir, "recover");
  const pids = { "pod-kept": process.pid, "pod-hung": process.pid, "pod-gone": await deadPid() };
  const first = new SandboxManager(root, new FakeLauncher(pids), logger("test"));
  for (const id of Object.keys(pids)) {
    await first.create({ id, netnsPath: "", annotations: {}, labels: {} });
    await first.start(id);
  }
  await first.create({ id: "pod-created", netnsPath: "", annotations: {}, labels: {} });
  await mkdir(path.join(root, "pod-garbled"));
  await writeFile(path.join(root, "pod-garbled/sandbox.json"), "{not json");

  const m = new Recorder();
  const again = new SandboxManager(root, new FakeLauncher(pids, ["pod-kept"]), logger("test"), m);
  await again.recover();
  assert.deepEqual(m.recoveries.sort(), ["killed", "lost", "lost", "recovered"]);
});

const dialer = (sock: string) => () =>
  new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(sock);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });

test("agent calls: failures are counted by method and code once the agent answered; hangs-up and cancels are not", async () => {
  let checks = 0;
  const server = new TtrpcServer().register(SandboxService, {
    check: () => {
      // Booting: the first Checks fail, which connectAgent retries and nothing counts.
      if (++checks < 3) throw new TtrpcError(Code.Unavailable, "not yet");
      return {};
    },
    setupSandbox: () => {
      throw new TtrpcError(Code.InvalidArgument, "bad pod config");
    },
    execVMProcess: () => new Promise(() => {}),
    getEvents: () => new Promise(() => {}),
  });
  const sock = path.join(dir, "agent.sock");
  const listener = net.createServer();
  server.serve(listener);
  await new Promise<void>((r) => listener.listen(sock, r));
  const m = new Recorder();
  const client = await connectAgent(dialer(sock), { deadlineMs: 5000, retryMs: 10, calls: m });
  try {
    const svc = client.service(SandboxService);
    await assert.rejects(svc.setupSandbox({}), /bad pod config/);
    await assert.rejects(svc.updateRoutes({}), (e: TtrpcError) => e.code === Code.Unimplemented);
    await assert.rejects(svc.execVMProcess({ command: "sleep" }, { timeoutMs: 50 }), /deadline/);
    const cancel = new AbortController();
    const cancelled = svc.execVMProcess({ command: "sleep" }, { signal: cancel.signal });
    cancel.abort();
    await assert.rejects(cancelled, (e: TtrpcError) => e.code === Code.Canceled);
    const pending = svc.getEvents({});
    await server.close(); // the VM goes away with a call in flight
    await assert.rejects(pending, (e: TtrpcError) => e.code === Code.Unavailable);
    assert.deepEqual(m.agentErrors, [
      "grpc.SandboxService/SetupSandbox InvalidArgument",
      "grpc.SandboxService/UpdateRoutes Unimplemented",
      "grpc.SandboxService/ExecVMProcess DeadlineExceeded",
    ]);
  } finally {
    client.close();
    listener.close();
  }
});

test("attack: a guest's made-up status codes become one label value, not a new series each", async () => {
  let next = 100;
  const server = new TtrpcServer().register(SandboxService, {
    check: () => ({}),
    setupSandbox: () => {
      throw new TtrpcError(next++ as Code, "hostile");
    },
  });
  const sock = path.join(dir, "hostile.sock");
  const listener = net.createServer();
  server.serve(listener);
  await new Promise<void>((r) => listener.listen(sock, r));
  const m = new Recorder();
  const client = await connectAgent(dialer(sock), { deadlineMs: 5000, calls: m });
  try {
    for (let i = 0; i < 20; i++) await assert.rejects(client.service(SandboxService).setupSandbox({}));
    assert.deepEqual(new Set(m.agentErrors), new Set(["grpc.SandboxService/SetupSandbox Unknown"]));
  } finally {
    client.close();
    await server.close();
    listener.close();
  }
});
