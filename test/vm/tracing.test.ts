import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { unaryClient } from "../../runtime/grpc/service.ts";
import { Task } from "../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import {
  busyboxBundle,
  cleanupDaemonDir,
  dialTaskApi,
  readFifo,
  requireArtifacts,
  runContainer,
  startDaemon,
  writeConfig,
} from "../../testkit/daemon.ts";
import { otlpReceiver, type ReceivedSpan } from "../unit/trace/otlp-receiver.ts";

// Traces from the daemon from source and a real guest, received by an OTLP/HTTP collector started here: one trace
// holds the host's task API call and the guest's span under it; SIGUSR1 turns tracing off and on; with tracing off
// nothing is exported and the daemon imports nothing of OpenTelemetry (a loader hook records such imports).
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const HOOKS = path.join(import.meta.dirname, "../unit/trace/record-otel-hooks.mjs");

async function daemonWith(prefix: string, sandbox: string) {
  requireArtifacts();
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const config = path.join(dir, "config.toml");
  await writeConfig(config, "\n[hypervisor.task]\nenable_tracing = true\n");
  await writeFile(config, (await readFile(config, "utf8")).replace("[sandbox]\n", `[sandbox]\n${sandbox}`));
  const importsLog = path.join(dir, "otel-imports.log");
  // The daemon inherits these: its imports of @opentelemetry/* are written to importsLog.
  const saved = { NODE_OPTIONS: process.env.NODE_OPTIONS, OTEL_IMPORTS_LOG: process.env.OTEL_IMPORTS_LOG };
  process.env.NODE_OPTIONS = `${saved.NODE_OPTIONS ?? ""} --import ${HOOKS}`;
  process.env.OTEL_IMPORTS_LOG = importsLog;
  const daemon = await startDaemon(dir, config).finally(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  const { client, close } = unaryClient(Controller, `unix://${daemon.sock}`);
  cleanups.push(async () => {
    close();
    await cleanupDaemonDir(daemon, dir);
  });
  const otelImports = async () => (await readFile(importsLog, "utf8").catch(() => "")).split("\n").filter(Boolean);
  return { dir, daemon, controller: client, otelImports };
}

async function waitFor<T>(what: string, get: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`waited ${timeoutMs / 1000} s for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const find = (spans: ReceivedSpan[], service: string, name: string, attrs: Record<string, string> = {}) =>
  spans.find(
    (s) => s.service === service && s.name === name && Object.entries(attrs).every(([k, v]) => s.attributes[k] === v),
  );

test("one trace holds the host's task API Exec and the guest's span under it; SIGUSR1 turns tracing off and on", {
  timeout: 600_000,
}, async (t) => {
  const receiver = await otlpReceiver();
  cleanups.push(() => receiver.close());
  const { dir, daemon, controller, otelImports } = await daemonWith(
    "vm-tracing-",
    `enable_tracing = true\ntracing_endpoint = "${receiver.url}"\n`,
  );
  assert.match(
    daemon.log(),
    /tracing on: spans go to http:\/\/127\.0\.0\.1:\d+\/v1\/traces \(OTLP\/HTTP\), guests' spans too/,
  );
  assert.ok((await otelImports()).includes("@opentelemetry/exporter-trace-otlp-http"));

  // On a failure, what the daemon said about tracing and what arrived.
  let passed = false;
  t.after(() => {
    if (passed) return;
    t.diagnostic(`spans: ${receiver.spans.map((s) => `${s.service}:${s.name}`).join(", ")}`);
    t.diagnostic(
      daemon
        .log()
        .split("\n")
        .filter((l) => /trac|WARN|ERROR/.test(l))
        .join("\n"),
    );
  });
  const ID = "pod-trace";
  await controller.create({ sandboxId: ID });
  const started = await controller.start({ sandboxId: ID });
  const client = await dialTaskApi(started.address);
  cleanups.push(async () => client.close());
  const task = client.service(Task);
  const bundle = await busyboxBundle(dir, ["sleep", "600"]);
  await task.create({ id: "c1", bundle });
  await task.start({ id: "c1" });
  const exec = async (execId: string) => {
    const stdout = path.join(dir, `${execId}.stdout`);
    const output = readFifo(stdout);
    const spec = { args: ["sh", "-c", `echo ${execId}`], env: ["PATH=/bin"], cwd: "/", user: { uid: 0, gid: 0 } };
    await task.exec({
      id: "c1",
      execId,
      stdout,
      spec: {
        typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
        value: Buffer.from(JSON.stringify(spec)),
      },
    });
    const waiting = task.wait({ id: "c1", execId });
    await task.start({ id: "c1", execId });
    assert.equal((await waiting).exitStatus, 0);
    assert.equal(await output, `${execId}\n`);
    await task.delete({ id: "c1", execId });
    await rm(stdout, { force: true });
  };
  await exec("e1");

  const spans = receiver.spans;
  const ids = { "container.id": "c1", "exec.id": "e1" };
  const guestExec = await waitFor("the guest's Exec span", () =>
    find(spans, "vmm-task", "containerd.task.v3.Task/Exec", ids),
  );
  const hostExec = await waitFor("the task API's Exec span", () =>
    find(spans, "vmm-sandboxer", "containerd.task.v3.Task/Exec", { ...ids, "sandbox.id": ID }),
  );
  assert.equal(guestExec.resource["sandbox.id"], ID, "the host names the guest's sandbox");
  assert.equal(guestExec.traceId, hostExec.traceId, "host and guest in one trace");
  const parent = spans.find((s) => s.spanId === guestExec.parentSpanId);
  assert.ok(parent, "the guest span's parent was exported");
  assert.equal(parent.service, "vmm-sandboxer", "the guest span's parent is the host's call into the guest");
  assert.equal(parent.parentSpanId, hostExec.spanId, "which the task API's Exec made");

  // Start and its phases, and the guest's SetupSandbox in Start's trace.
  const start = await waitFor("Controller/Start", () =>
    find(spans, "vmm-sandboxer", "containerd.services.sandbox.v1.Controller/Start", { "sandbox.id": ID }),
  );
  for (const phase of ["spawn", "agent", "setup"]) {
    const p = find(spans, "vmm-sandboxer", `start.${phase}`);
    assert.equal(p?.parentSpanId, start.spanId, `phase ${phase} under Start`);
  }
  const setup = await waitFor("the guest's SetupSandbox", () =>
    find(spans, "vmm-task", "grpc.SandboxService/SetupSandbox"),
  );
  assert.equal(setup.traceId, start.traceId);

  // SIGUSR1: off. Nothing new is exported after the daemon says so.
  daemon.proc.kill("SIGUSR1");
  await waitFor("tracing off", () => (/tracing off/.test(daemon.log()) ? true : undefined));
  const before = spans.length;
  await exec("e2");
  // Longer than a drain interval (2 s) and an export delay (1 s) together.
  await new Promise((r) => setTimeout(r, 6000));
  assert.equal(
    spans.length,
    before,
    `new spans while off: ${spans
      .slice(before)
      .map((s) => s.name)
      .join(", ")}`,
  );

  // And on again.
  daemon.proc.kill("SIGUSR1");
  await waitFor("tracing on again", () => (daemon.log().match(/tracing on:/g)?.length === 2 ? true : undefined));
  await exec("e3");
  const e3 = await waitFor("the guest's Exec span after SIGUSR1", () =>
    find(spans, "vmm-task", "containerd.task.v3.Task/Exec", { "exec.id": "e3" }),
  );
  assert.equal(e3.traceId, find(spans, "vmm-sandboxer", "containerd.task.v3.Task/Exec", { "exec.id": "e3" })?.traceId);

  await task.kill({ id: "c1", signal: 9 });
  await task.delete({ id: "c1" }).catch(() => undefined);
  await controller.shutdown({ sandboxId: ID });
  passed = true;
});

test("with tracing off nothing is exported and the daemon imports nothing of OpenTelemetry", {
  timeout: 300_000,
}, async () => {
  const receiver = await otlpReceiver();
  cleanups.push(() => receiver.close());
  const { dir, daemon, controller, otelImports } = await daemonWith(
    "vm-tracing-off-",
    `tracing_endpoint = "${receiver.url}"\n`,
  );
  const ID = "pod-notrace";
  await controller.create({ sandboxId: ID });
  const started = await controller.start({ sandboxId: ID });
  const r = await runContainer(dir, started.address, "c1", "echo quiet");
  assert.equal(r.out, "quiet\n");
  await controller.shutdown({ sandboxId: ID });
  await new Promise((r) => setTimeout(r, 3000));
  assert.deepEqual(receiver.spans, []);
  assert.doesNotMatch(daemon.log(), /tracing on/);
  assert.deepEqual(await otelImports(), []);
});
