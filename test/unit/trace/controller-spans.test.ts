import assert from "node:assert/strict";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { Controller } from "../../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { controllerHandlers } from "../../../runtime/sandboxer/controller.ts";
import type { SandboxManager } from "../../../runtime/sandboxer/sandbox/manager.ts";
import { tracing } from "../../../runtime/trace/host.ts";
import { recordingLog } from "./fixtures.ts";

test("each Controller call is a server span named after its method, with the sandbox id, under containerd's span", async () => {
  const exporter = new InMemorySpanExporter();
  tracing.configure({
    endpoint: "http://127.0.0.1:9/v1/traces",
    guests: false,
    version: "t",
    log: recordingLog(),
    exporter,
  });
  const rec = { id: "pod-1", state: "running", createdAt: Date.now(), labels: {} };
  const mgr = {
    status: () => rec,
    stop: async () => {},
    shutdown: async () => {
      throw new Error("sandbox pod-1 is busy");
    },
  } as unknown as SandboxManager;
  const handlers = controllerHandlers(mgr, "t");
  assert.deepEqual(Object.keys(handlers).sort(), Controller.methods.map((m) => m.localName).sort(), "every method");
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  const ctx = { metadata, signal: new AbortController().signal };

  await handlers.status({ sandboxId: "pod-1", verbose: false } as never, ctx);
  await tracing.set(true);
  await handlers.status({ sandboxId: "pod-1", verbose: false } as never, ctx);
  await handlers.stop({ sandboxId: "pod-1", timeoutSecs: 1 } as never, { ...ctx, metadata: new grpc.Metadata() });
  await assert.rejects(handlers.shutdown({ sandboxId: "pod-1" } as never, ctx), /busy/);
  await tracing.set(false);

  const spans = exporter.getFinishedSpans();
  assert.deepEqual(
    spans.map((s) => s.name),
    ["Status", "Stop", "Shutdown"].map((m) => `containerd.services.sandbox.v1.Controller/${m}`),
    "the call made while off has no span",
  );
  const [status, stop, shutdown] = spans;
  assert.equal(status!.kind, 1);
  assert.equal(status!.attributes["sandbox.id"], "pod-1");
  assert.equal(status!.spanContext().traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.equal(status!.parentSpanContext?.spanId, "b7ad6b7169203331");
  assert.equal(stop!.parentSpanContext, undefined, "without containerd's traceparent: a trace of its own");
  assert.equal(shutdown!.status.code, 2);
  assert.equal(shutdown!.status.message, "sandbox pod-1 is busy");
  await tracing.shutdown();
});
