import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { EventQueue } from "../../../runtime/agent/event-queue.ts";
import { sandboxService } from "../../../runtime/agent/services/sandbox-service.ts";
import { guestTracing } from "../../../runtime/agent/services/tracing.ts";
import { Task } from "../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { SandboxService } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { connectAgent, traceGuest } from "../../../runtime/sandboxer/agent.ts";
import { tracing } from "../../../runtime/trace/host.ts";
import { traceServer } from "../../../runtime/trace/ttrpc-server.ts";
import { type CallContext, type TtrpcClient, TtrpcServer } from "../../../runtime/ttrpc/index.ts";
import { recordingLog } from "./fixtures.ts";

// The daemon's agent client and the agent's services over a real ttrpc connection: the trace goes into the guest
// in the request's metadata and the guest's spans come back through DrainSpans.
let dir: string;
let server: TtrpcServer;
let agent: TtrpcClient;
const exporter = new InMemorySpanExporter();
const seen: Array<string | undefined> = [];
let shutdownSawExported = -1;

const guestSpans = () =>
  exporter.getFinishedSpans().filter((s) => s.resource.attributes["service.name"] === "vmm-task");
const hostSpans = () =>
  exporter.getFinishedSpans().filter((s) => s.resource.attributes["service.name"] === "vmm-sandboxer");

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "trace-host-guest-"));
  const sock = path.join(dir, "agent.sock");
  // The agent's side: its real SandboxService (DrainSpans) and a task service wrapped the way the agent wraps its own.
  const tasks = traceServer(
    Task,
    {
      create: async (req, ctx: CallContext) => {
        seen.push(ctx.metadata.get("traceparent")?.[0]);
        return { pid: req.id === "c1" ? 42 : 43 };
      },
      shutdown: async () => {
        shutdownSawExported = guestSpans().length;
        return {};
      },
    },
    guestTracing,
  );
  server = new TtrpcServer()
    .register(Task, tasks)
    .register(SandboxService, sandboxService({ events: new EventQueue(), debug: false, setupPod: async () => {} }));
  const l = net.createServer();
  server.serve(l);
  await new Promise<void>((r) => l.listen(sock, r));
  agent = await connectAgent(
    async () => {
      const c = net.connect(sock);
      await new Promise((r, j) => c.once("connect", r).once("error", j));
      return c;
    },
    { deadlineMs: 5000 },
  );
  tracing.configure({
    endpoint: "http://127.0.0.1:9/v1/traces",
    guests: true,
    version: "0.0.0-test",
    log: recordingLog(),
    exporter,
    // Drained only when this test says so (on Shutdown and on turning off).
    drainIntervalMs: 3_600_000,
    flushWaitMs: 2000,
  });
  traceGuest(agent, "pod-1");
});

after(async () => {
  agent.close();
  await server.shutdown();
  await tracing.shutdown();
  await rm(dir, { recursive: true, force: true });
});

test("off: calls into the guest carry no traceparent and the guest records nothing", async () => {
  assert.equal((await agent.service(Task).create({ id: "c0" })).pid, 43);
  assert.deepEqual(seen, [undefined]);
  assert.deepEqual((await agent.service(SandboxService).drainSpans({ maxSpans: 10 })).spans, []);
});

test("on: the guest's span is the child of the host's call into it, in one trace, with the host's resource", async () => {
  await tracing.set(true);
  await tracing.serve("containerd.task.v3.Task/Create", undefined, { "sandbox.id": "pod-1" }, () =>
    agent.service(Task).create({ id: "c1" }),
  );
  // Shutdown powers the guest off: its spans are drained before the call goes out.
  await agent.service(Task).shutdown({ id: "pod-1" });
  assert.equal(shutdownSawExported, 1);
  await tracing.set(false);

  const call = hostSpans().find((s) => s.kind === 2 && s.name === "containerd.task.v3.Task/Create");
  assert.ok(call, "a client span for the call");
  assert.deepEqual(call.attributes, {
    "rpc.system": "ttrpc",
    "rpc.service": "containerd.task.v3.Task",
    "rpc.method": "Create",
    "sandbox.id": "pod-1",
  });
  assert.equal(seen[1], `00-${call.spanContext().traceId}-${call.spanContext().spanId}-01`);
  const [g] = guestSpans();
  assert.equal(g!.name, "containerd.task.v3.Task/Create");
  assert.equal(g!.spanContext().traceId, call.spanContext().traceId);
  assert.equal(g!.parentSpanContext?.spanId, call.spanContext().spanId);
  assert.equal(g!.attributes["container.id"], "c1");
  assert.deepEqual(g!.resource.attributes, { "service.name": "vmm-task", "sandbox.id": "pod-1" });
});

test("background calls get no client span, whatever span started them", async () => {
  await tracing.set(true);
  const before = hostSpans().length;
  await tracing.serve("S/M", undefined, {}, async () => {
    await agent.service(SandboxService).check({ service: "" });
    await agent.service(SandboxService).drainSpans({ maxSpans: 1 });
  });
  await tracing.set(false);
  assert.deepEqual(
    hostSpans()
      .slice(before)
      .map((s) => s.name),
    ["S/M"],
  );
});
