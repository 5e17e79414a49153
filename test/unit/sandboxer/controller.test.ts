import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { CgroupStats } from "../../../runtime/cgroups/stats.ts";
import { addUnaryService, type MethodsOf, type UnaryClient, unaryClient } from "../../../runtime/grpc/service.ts";
import { logger } from "../../../runtime/log/log.ts";
import { MetricsSchema } from "../../../runtime/protos/gen/containerd/cgroups/v2/metrics_pb.ts";
import { Controller } from "../../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { NamespaceMode, PodSandboxConfigSchema } from "../../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { controllerHandlers } from "../../../runtime/sandboxer/controller.ts";
import { SandboxManager } from "../../../runtime/sandboxer/sandbox/manager.ts";
import type { PodResources } from "../../../runtime/sandboxer/sandbox/pod-cgroup.ts";
import type { ExitInfo, Launcher, SandboxRecord } from "../../../runtime/sandboxer/sandbox/record.ts";

/** A launcher whose "VMs" are promises the test ends, recording what the manager asked of it. */
class FakeLauncher implements Launcher {
  calls: string[] = [];
  exits = new Map<string, (e: ExitInfo) => void>();
  failStart = false;
  recoverable = true;
  async prepare(rec: SandboxRecord, dir: string) {
    this.calls.push(`prepare ${rec.id}`);
    await mkdir(path.join(dir, "shared"));
  }
  /** Start waits (a slow boot) until its caller gives up. */
  hangStart = false;
  async start(rec: SandboxRecord, dir: string, signal?: AbortSignal) {
    this.calls.push(`start ${rec.id}`);
    if (this.failStart) throw new Error("agent did not answer within 30 s");
    if (this.hangStart) {
      await new Promise((resolve) => signal?.addEventListener("abort", resolve, { once: true }));
      throw new Error("start cancelled by the caller (waiting for the agent)");
    }
    return { pid: 4242, taskAddress: `ttrpc+unix://${dir}/task.sock`, runtime: { fake: true } };
  }
  waitExit(rec: SandboxRecord) {
    return new Promise<ExitInfo>((resolve) => this.exits.set(rec.id, resolve));
  }
  async stop(rec: SandboxRecord) {
    this.calls.push(`stop ${rec.id}`);
    this.exits.get(rec.id)?.({ exitStatus: 0, exitedAt: new Date() });
  }
  async release(rec: SandboxRecord) {
    this.calls.push(`release ${rec.id}`);
  }
  cgroupStats: CgroupStats | undefined = undefined;
  updates: PodResources[] = [];
  async stats(_rec: SandboxRecord) {
    return this.cgroupStats;
  }
  async update(_rec: SandboxRecord, r: PodResources) {
    this.updates.push(r);
  }
  async discard(dir: string) {
    this.calls.push(`discard ${path.basename(dir)}`);
  }
  async recover(rec: SandboxRecord) {
    this.calls.push(`recover ${rec.id}`);
    return this.recoverable ? { ok: true as const } : { ok: false as const, reason: "vmm pid 4242 is gone" };
  }
}

let dir: string;
let server: grpc.Server;
let launcher: FakeLauncher;
let client: UnaryClient<MethodsOf<typeof Controller>>;
let close: () => void;

async function serve(mgr: SandboxManager) {
  server = new grpc.Server();
  addUnaryService(server, Controller, controllerHandlers(mgr, "test"));
  const sock = path.join(dir, `c-${Math.random()}.sock`);
  await new Promise<void>((res, rej) =>
    server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
  );
  ({ client, close } = unaryClient(Controller, `unix://${sock}`));
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "controller-"));
  launcher = new FakeLauncher();
  await serve(new SandboxManager(path.join(dir, "state"), launcher, logger("test")));
});

afterEach(async () => {
  close();
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

// containerd sends the bare type URL, without type.googleapis.com/.
const options = {
  typeUrl: "runtime.v1.PodSandboxConfig",
  value: toBinary(PodSandboxConfigSchema, create(PodSandboxConfigSchema, { hostname: "web-1" })),
};

test("the CRI sequence: create, start (version 3, address, pid), status, wait, stop, shutdown, NotFound", async () => {
  await client.create({ sandboxId: "pod1", options, netnsPath: "" });
  const rec = JSON.parse(await readFile(path.join(dir, "state/pod1/sandbox.json"), "utf8")) as SandboxRecord;
  assert.equal((rec.podConfig as { hostname: string }).hostname, "web-1");
  const started = await client.start({ sandboxId: "pod1" });
  assert.equal(started.version, 3);
  assert.equal(started.pid, 4242);
  assert.equal(started.address, `ttrpc+unix://${dir}/state/pod1/task.sock`);
  const st = await client.status({ sandboxId: "pod1", verbose: true });
  assert.equal(st.state, "SANDBOX_READY");
  assert.equal(st.version, 3);
  const platform = await client.platform({ sandboxId: "pod1" });
  assert.equal(platform.platform?.os, "linux");
  const waiting = client.wait({ sandboxId: "pod1" });
  await client.stop({ sandboxId: "pod1", timeoutSecs: 0 });
  assert.equal((await waiting).exitStatus, 0);
  assert.equal((await client.status({ sandboxId: "pod1" })).state, "SANDBOX_NOTREADY");
  await client.shutdown({ sandboxId: "pod1" });
  await assert.rejects(
    client.status({ sandboxId: "pod1" }),
    (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
  );
  assert.deepEqual(await readdir(path.join(dir, "state")), []);
  assert.deepEqual(launcher.calls, ["prepare pod1", "start pod1", "stop pod1", "release pod1"]);
});

test("a VM that dies on its own ends Wait with its status and turns the sandbox NOTREADY", async () => {
  await client.create({ sandboxId: "pod2" });
  await client.start({ sandboxId: "pod2" });
  const waiting = client.wait({ sandboxId: "pod2" });
  launcher.exits.get("pod2")!({ exitStatus: 137, exitedAt: new Date() });
  assert.equal((await waiting).exitStatus, 137);
  assert.equal((await client.status({ sandboxId: "pod2" })).state, "SANDBOX_NOTREADY");
  assert.ok(launcher.calls.includes("release pod2"));
});

test("bad requests get clear errors and change nothing", async () => {
  const code = (c: grpc.status, re: RegExp) => (e: grpc.ServiceError) => e.code === c && re.test(e.details);
  for (const id of ["", "../etc", "a/b", "x".repeat(200), ".hidden"]) {
    await assert.rejects(client.create({ sandboxId: id }), code(grpc.status.INVALID_ARGUMENT, /sandbox id/));
  }
  await client.create({ sandboxId: "dup" });
  await assert.rejects(client.create({ sandboxId: "dup" }), code(grpc.status.ALREADY_EXISTS, /dup already exists/));
  await assert.rejects(client.start({ sandboxId: "nope" }), code(grpc.status.NOT_FOUND, /nope not found/));
  await assert.rejects(
    client.create({
      sandboxId: "bad",
      options: { typeUrl: "runtime.v1.PodSandboxConfig", value: new Uint8Array([0xff, 0xff]) },
    }),
    code(grpc.status.INVALID_ARGUMENT, /not a valid PodSandboxConfig/),
  );
  await assert.rejects(
    client.create({ sandboxId: "bad", options: { typeUrl: "foo.Bar", value: new Uint8Array([1]) } }),
    code(grpc.status.INVALID_ARGUMENT, /'foo.Bar' is not runtime.v1.PodSandboxConfig/),
  );
  // What a VM cannot share with the host is refused by name, never silently replaced by the VM's own.
  for (const [field, k8s] of [
    ["network", "hostNetwork"],
    ["pid", "hostPID"],
    ["ipc", "hostIPC"],
  ] as const) {
    const config = create(PodSandboxConfigSchema, {
      linux: { securityContext: { namespaceOptions: { [field]: NamespaceMode.NODE } } },
    });
    await assert.rejects(
      client.create({
        sandboxId: `host-${field}`,
        options: { typeUrl: "runtime.v1.PodSandboxConfig", value: toBinary(PodSandboxConfigSchema, config) },
      }),
      code(
        grpc.status.INVALID_ARGUMENT,
        new RegExp(`namespace_options\\.${field} = NODE \\(${k8s}\\) cannot be honoured`),
      ),
    );
  }
  assert.deepEqual((await readdir(path.join(dir, "state"))).sort(), ["dup"]);
  await client.start({ sandboxId: "dup" });
  await assert.rejects(client.start({ sandboxId: "dup" }), code(grpc.status.FAILED_PRECONDITION, /is running/));
});

test("a failed start releases what it took and reports why", async () => {
  launcher.failStart = true;
  await client.create({ sandboxId: "pod3" });
  await assert.rejects(client.start({ sandboxId: "pod3" }), /start sandbox pod3: agent did not answer within 30 s/);
  assert.deepEqual(launcher.calls, ["prepare pod3", "start pod3", "release pod3"]);
  assert.equal((await client.status({ sandboxId: "pod3" })).state, "SANDBOX_NOTREADY");
});

test("a Start its caller gives up on stops what it started and removes the sandbox; the id can be created again", async () => {
  launcher.hangStart = true;
  await client.create({ sandboxId: "slow" });
  await assert.rejects(client.start({ sandboxId: "slow" }, { deadlineMs: 300 }), (e: grpc.ServiceError) =>
    [grpc.status.DEADLINE_EXCEEDED, grpc.status.CANCELLED].includes(e.code),
  );
  // The daemon hears of the cancellation, releases and forgets the sandbox on its own.
  for (let i = 0; i < 50 && (await readdir(path.join(dir, "state"))).includes("slow"); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(launcher.calls, ["prepare slow", "start slow", "release slow"]);
  assert.equal((await readdir(path.join(dir, "state"))).includes("slow"), false, "its directory is gone");
  await assert.rejects(
    client.status({ sandboxId: "slow" }),
    (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
  );
  launcher.hangStart = false;
  await client.create({ sandboxId: "slow" });
  await client.start({ sandboxId: "slow" });
});

test("recovery reattaches running sandboxes, cleans unrecoverable ones and drops unreadable records", async () => {
  await client.create({ sandboxId: "keep" });
  await client.start({ sandboxId: "keep" });
  await client.create({ sandboxId: "lost" });
  await client.start({ sandboxId: "lost" });
  await mkdir(path.join(dir, "state/torn"));
  await writeFile(path.join(dir, "state/torn/sandbox.json"), "{ not json");
  close();
  server.forceShutdown();

  const fresh = new FakeLauncher();
  fresh.recover = async (rec) => (rec.id === "keep" ? { ok: true } : { ok: false, reason: "vmm pid 4242 is gone" });
  const mgr = new SandboxManager(path.join(dir, "state"), fresh, logger("test"));
  const r = await mgr.recover();
  assert.deepEqual(r.recovered, ["keep"]);
  assert.deepEqual(r.cleaned.sort(), ["lost", "torn"]);
  await serve(mgr);
  assert.equal((await client.status({ sandboxId: "keep" })).state, "SANDBOX_READY");
  assert.equal((await client.status({ sandboxId: "lost" })).state, "SANDBOX_NOTREADY");
  assert.ok(fresh.calls.includes("release lost"));
  await assert.rejects(
    client.status({ sandboxId: "torn" }),
    (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
  );
});

test("Metrics reports the pod cgroup as cgroup v2 Metrics; no cgroup or v1 is a clear FailedPrecondition", async () => {
  const code = (c: grpc.status, re: RegExp) => (e: grpc.ServiceError) => e.code === c && re.test(e.details);
  await client.create({ sandboxId: "m1" });
  await assert.rejects(
    client.metrics({ sandboxId: "m1" }),
    code(grpc.status.FAILED_PRECONDITION, /created, not running/),
  );
  await client.start({ sandboxId: "m1" });
  await assert.rejects(client.metrics({ sandboxId: "m1" }), code(grpc.status.FAILED_PRECONDITION, /cgroup_parent/));
  launcher.cgroupStats = { version: 1 };
  await assert.rejects(client.metrics({ sandboxId: "m1" }), code(grpc.status.FAILED_PRECONDITION, /cgroup v1/));
  launcher.cgroupStats = {
    version: 2,
    memory: { current: 300n << 20n, max: 1n << 30n, stat: { anon: 5n }, events: { oom_kill: 0n } },
    pids: { current: 4n, max: null },
  };
  const { metrics } = await client.metrics({ sandboxId: "m1" });
  assert.equal(metrics?.id, "m1");
  assert.equal(metrics?.data?.typeUrl, "io.containerd.cgroups.v2.Metrics");
  const m = fromBinary(MetricsSchema, metrics!.data!.value);
  assert.equal(m.memory?.usage, 300n << 20n);
  assert.equal(m.pids?.current, 4n);
});

test("Update applies linux.resources from the spec or extensions; bad JSON names the field", async () => {
  const code = (c: grpc.status, re: RegExp) => (e: grpc.ServiceError) => e.code === c && re.test(e.details);
  await client.create({ sandboxId: "u1" });
  await client.start({ sandboxId: "u1" });
  const json = (v: unknown) => ({ typeUrl: "x", value: Buffer.from(JSON.stringify(v)) });
  const spec = json({
    linux: { resources: { cpu: { shares: 512, quota: 50000, period: 100000 }, memory: { limit: 1 << 29 } } },
  });
  await client.update({ sandboxId: "u1", sandbox: { spec }, fields: ["spec"] });
  await client.update({
    sandboxId: "u1",
    sandbox: { extensions: { resources: json({ memory: { limit: 1 << 30 } }) } },
    fields: ["extensions"],
  });
  await client.update({ sandboxId: "u1", sandbox: { labels: { a: "b" } }, fields: ["labels"] });
  assert.deepEqual(launcher.updates, [
    { cpu: { shares: 512, quota: 50000, period: 100000 }, memory: { limit: 1 << 29 } },
    { memory: { limit: 1 << 30 } },
  ]);
  await assert.rejects(
    client.update({ sandboxId: "u1", sandbox: { spec: { typeUrl: "x", value: Buffer.from("{") } }, fields: ["spec"] }),
    code(grpc.status.INVALID_ARGUMENT, /sandbox.spec is not a JSON object/),
  );
  await assert.rejects(
    client.update({
      sandboxId: "u1",
      sandbox: { extensions: { resources: json({ cpu: { shares: "many" } }) } },
      fields: ["extensions"],
    }),
    code(grpc.status.INVALID_ARGUMENT, /resources.cpu.shares must be a number/),
  );
  await assert.rejects(client.update({ sandboxId: "nope" }), code(grpc.status.NOT_FOUND, /nope/));
});
