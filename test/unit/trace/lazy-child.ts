// lazy.test.ts's child: the daemon's and the agent's traced paths with tracing off, then (argv "on") turned on.

import { guestTracing } from "../../../runtime/agent/services/tracing.ts";
import { Task } from "../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import "../../../runtime/agent/services/task-service.ts";
import "../../../runtime/sandboxer/sandbox/serve.ts";
import "../../../runtime/sandboxer/sandbox/boot.ts";
import { controllerHandlers } from "../../../runtime/sandboxer/controller.ts";
import type { SandboxManager } from "../../../runtime/sandboxer/sandbox/manager.ts";
import { tracing } from "../../../runtime/trace/host.ts";
import { traceServer } from "../../../runtime/trace/ttrpc-server.ts";
import type { CallContext } from "../../../runtime/ttrpc/index.ts";
import { recordingLog } from "./fixtures.ts";

const log = recordingLog();
tracing.configure({ endpoint: "http://127.0.0.1:9/v1/traces", guests: true, version: "test", log });
const ctx = { metadata: new Map([["traceparent", ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"]]]) };
const mgr = { status: () => ({ id: "pod-1", state: "running", createdAt: Date.now(), labels: {} }) };
await controllerHandlers(mgr as unknown as SandboxManager, "test").status(
  { sandboxId: "pod-1", verbose: false } as never,
  { metadata: { get: () => [] }, signal: new AbortController().signal } as never,
);
for (const tracer of [tracing, guestTracing]) {
  const tasks = traceServer(Task, { create: async () => ({ pid: 1 }) }, tracer);
  await tasks.create!(
    { id: "c1" } as never,
    { ...ctx, service: "containerd.task.v3.Task", method: "Create" } as unknown as CallContext,
  );
}
process.stdout.write("off done\n");
if (process.argv[2] === "on") {
  await tracing.set(true);
  process.stdout.write(`${log.lines.join("\n")}\n`);
  await tracing.shutdown();
}
