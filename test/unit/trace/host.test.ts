import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import { InMemorySpanExporter, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { DrainSpansResponseSchema } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { NO_METRICS, phaseLaps } from "../../../runtime/sandboxer/metrics/observer.ts";
import type { AcceptedSpan } from "../../../runtime/trace/guest-import.ts";
import { CarriedTraces, HostTracing } from "../../../runtime/trace/host.ts";
import { recordingLog, tick } from "./fixtures.ts";
import { otlpReceiver } from "./otlp-receiver.ts";

function setup(opts: { guests?: boolean; exporter?: SpanExporter } = {}) {
  const exporter = new InMemorySpanExporter();
  const log = recordingLog();
  const tracing = new HostTracing();
  tracing.configure({
    endpoint: "http://127.0.0.1:9/v1/traces",
    guests: opts.guests ?? true,
    version: "0.0.0-test",
    log,
    exporter: opts.exporter ?? exporter,
    drainIntervalMs: 10,
    flushWaitMs: 300,
  });
  const spans = () => exporter.getFinishedSpans();
  return { tracing, exporter, log, spans };
}

const byName = (spans: ReadableSpan[], name: string) => {
  const s = spans.find((x) => x.name === name);
  assert.ok(s, `no span ${name} among ${spans.map((x) => x.name).join(", ")}`);
  return s;
};

test("off: work runs as it is, nothing is recorded, nothing is carried, the phase sink is the one given", async () => {
  const { tracing, spans } = setup();
  assert.equal(tracing.on, false);
  assert.equal(tracing.traces("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), false);
  assert.equal(await tracing.serve("S/M", undefined, {}, async () => 7), 7);
  assert.equal(await tracing.client("C/M", {}, undefined, async (tp) => tp), undefined);
  assert.equal(tracing.phases(NO_METRICS), NO_METRICS, "so phaseLaps keeps its no-op");
  await tracing.shutdown();
  assert.deepEqual(spans(), []);
});

test("on: a server span, the calls made in it as client spans carrying their traceparent, Start's phases", async () => {
  const { tracing, spans, log } = setup();
  await tracing.set(true);
  assert.match(log.lines.join("\n"), /tracing on: spans go to http:\/\/127\.0\.0\.1:9\/v1\/traces/);
  const containerd = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  let carried: string | undefined;
  const out = await tracing.serve("Controller/Start", containerd, { "sandbox.id": "pod-1" }, async () => {
    const lap = phaseLaps(tracing.phases(NO_METRICS));
    await tick(5);
    lap("spawn");
    lap("agent");
    carried = await tracing.client(
      "grpc.SandboxService/SetupSandbox",
      { "rpc.system": "ttrpc" },
      undefined,
      async (tp) => tp,
    );
    return "started";
  });
  assert.equal(out, "started");
  await tracing.set(false);
  const all = spans();
  const start = byName(all, "Controller/Start");
  assert.equal(start.spanContext().traceId, "0af7651916cd43dd8448eb211c80319c", "containerd's trace");
  assert.equal(start.parentSpanContext?.spanId, "b7ad6b7169203331");
  assert.equal(start.attributes["sandbox.id"], "pod-1");
  assert.equal(start.resource.attributes["service.name"], "vmm-sandboxer");
  for (const name of ["start.spawn", "start.agent", "grpc.SandboxService/SetupSandbox"]) {
    const s = byName(all, name);
    assert.equal(s.parentSpanContext?.spanId, start.spanContext().spanId, `${name} is under Start`);
  }
  const spawn = byName(all, "start.spawn");
  assert.ok(spawn.duration[0] * 1e3 + spawn.duration[1] / 1e6 >= 4, "the phase lasts what the lap measured");
  const call = byName(all, "grpc.SandboxService/SetupSandbox");
  assert.equal(carried, `00-${call.spanContext().traceId}-${call.spanContext().spanId}-01`);
});

test("a call outside any span, or with guests untraced, carries no traceparent", async () => {
  const { tracing } = setup({ guests: false });
  await tracing.set(true);
  assert.equal(await tracing.client("C/M", {}, undefined, async (tp) => tp), undefined, "no active span");
  const inside = await tracing.serve("S/M", undefined, {}, () =>
    tracing.client("C/M", {}, undefined, async (tp) => tp),
  );
  assert.equal(inside, undefined, "[hypervisor.task] enable_tracing off");
  await tracing.shutdown();
});

test("SIGUSR1's toggle: off records nothing new, on again does, and each says so", async () => {
  const { tracing, spans, log } = setup();
  await tracing.toggle();
  await tracing.serve("one", undefined, {}, async () => undefined);
  await tracing.toggle();
  assert.equal(tracing.on, false);
  await tracing.serve("two", undefined, {}, async () => undefined);
  await tracing.toggle();
  await tracing.serve("three", undefined, {}, async () => undefined);
  await tracing.set(false);
  assert.deepEqual(
    spans().map((s) => s.name),
    ["one", "three"],
  );
  assert.deepEqual(
    log.lines.filter((l) => /tracing (on|off)/.test(l)).map((l) => l.split(":")[0]!.split(";")[0]),
    ["info tracing on", "info tracing off", "info tracing on", "info tracing off"],
  );
});

const TRACE = "0af7651916cd43dd8448eb211c80319c";

function guestReply(traceId: string, parentSpanId: string, n = 1, attributes: Record<string, string> = {}) {
  const now = BigInt(Date.now()) * 1_000_000n;
  return create(DrainSpansResponseSchema, {
    spans: Array.from({ length: n }, (_, i) => ({
      traceId: Buffer.from(traceId, "hex"),
      spanId: Buffer.from((i + 1).toString(16).padStart(16, "0"), "hex"),
      parentSpanId: Buffer.from(parentSpanId, "hex"),
      name: "containerd.task.v3.Task/Exec",
      kind: 1,
      startTimeUnixNano: now - 1000n,
      endTimeUnixNano: now,
      attributes,
    })),
  });
}

test("a linked guest is drained while on; its spans are exported under the resource the host sets", async () => {
  const { tracing, spans } = setup();
  let parent = "";
  const carried = new CarriedTraces();
  const link = tracing.link(
    "pod-1",
    async () =>
      // A guest that claims to be another service of another sandbox, in its span's attributes.
      parent
        ? guestReply(TRACE, parent, 1, { "service.name": "evil", "sandbox.id": "pod-2" })
        : guestReply(TRACE, "b7ad6b7169203331", 0),
    carried,
  );
  await tracing.set(true);
  await tracing.serve("S/M", `00-${TRACE}-b7ad6b7169203331-01`, {}, () =>
    tracing.client("containerd.task.v3.Task/Exec", {}, carried, async (tp) => {
      parent = tp!.split("-")[2]!;
    }),
  );
  await tick(50);
  await tracing.set(false);
  const guest = spans().filter((s) => s.resource.attributes["service.name"] === "vmm-task");
  assert.ok(guest.length >= 1, `${spans().length} spans, none from the guest`);
  const g = guest[0]!;
  assert.deepEqual(g.resource.attributes, { "service.name": "vmm-task", "sandbox.id": "pod-1" });
  assert.equal(g.spanContext().traceId, TRACE);
  const host = spans().filter((s) => s.resource.attributes["service.name"] === "vmm-sandboxer");
  assert.equal(g.parentSpanContext?.spanId, byName(host, "containerd.task.v3.Task/Exec").spanContext().spanId);
  link.close();
});

test("attack: spans in a trace the host never carried into this guest are left out, and said so", async () => {
  const { tracing, spans, log } = setup();
  const carried = new CarriedTraces();
  carried.add(`00-${TRACE}-b7ad6b7169203331-01`);
  const link = tracing.link(
    "pod-1",
    async () => guestReply("22222222222222222222222222222222", "b7ad6b7169203331", 3),
    carried,
  );
  await tracing.set(true);
  await tick(50);
  await tracing.set(false);
  assert.equal(spans().filter((s) => s.resource.attributes["service.name"] === "vmm-task").length, 0);
  assert.match(
    log.lines.join("\n"),
    /warn sandbox pod-1: guest spans left out: \d+ \(in a trace the host did not carry/,
  );
  link.close();
});

test("attack: a guest that never answers a drain gets one drain at a time, and turning off does not wait on it", async () => {
  const { tracing } = setup();
  let calls = 0;
  const link = tracing.link(
    "pod-1",
    () => {
      calls++;
      return new Promise(() => {});
    },
    new CarriedTraces(),
  );
  await tracing.set(true);
  await tick(100);
  assert.equal(calls, 1, "drains do not pile up behind the one that hangs");
  await tracing.set(false);
  assert.equal(tracing.on, false);
  link.close();
});

test("attack: guests' spans wait for a stuck collector in a bounded queue, the rest dropped and counted", async () => {
  const stuck: SpanExporter = {
    export(_spans: ReadableSpan[], _done: (r: ExportResult) => void) {},
    shutdown: async () => {},
  };
  const { tracing } = setup({ exporter: stuck });
  await tracing.set(true);
  const spans = guestReply(TRACE, "b7ad6b7169203331", 1000).spans.map(
    (s): AcceptedSpan => ({
      traceId: TRACE,
      spanId: Buffer.from(s.spanId).toString("hex"),
      parentSpanId: undefined,
      name: s.name,
      kind: 1,
      startNs: s.startTimeUnixNano,
      endNs: s.endTimeUnixNano,
      attributes: {},
      droppedAttributes: 0,
      statusCode: 0,
      statusMessage: "",
    }),
  );
  let dropped = 0;
  for (let i = 0; i < 10; i++) dropped += tracing.exportGuest("pod-1", spans);
  // 512 went into the export that never returns, 4096 wait in the queue.
  assert.equal(dropped, 10_000 - 512 - 4096);
});

test("spans reach an OTLP/HTTP collector as JSON", async () => {
  const receiver = await otlpReceiver();
  const log = recordingLog();
  const tracing = new HostTracing();
  tracing.configure({ endpoint: receiver.url, guests: false, version: "0.0.0-test", log });
  try {
    await tracing.set(true);
    await tracing.serve(
      "containerd.services.sandbox.v1.Controller/Status",
      undefined,
      { "sandbox.id": "pod-1" },
      async () => undefined,
    );
    await tracing.set(false);
    const [s] = receiver.spans;
    assert.equal(s?.name, "containerd.services.sandbox.v1.Controller/Status");
    assert.equal(s.service, "vmm-sandboxer");
    assert.equal(s.attributes["sandbox.id"], "pod-1");
    assert.match(s.traceId, /^[0-9a-f]{32}$/);
  } finally {
    await tracing.shutdown();
    await receiver.close();
  }
});

test("a collector that is down is reported, once a minute at most", async () => {
  const failing: SpanExporter = {
    export: (_s, done) => done({ code: ExportResultCode.FAILED, error: new Error("ECONNREFUSED") }),
    shutdown: async () => {},
  };
  const { tracing, log } = setup({ exporter: failing });
  await tracing.set(true);
  for (let i = 0; i < 3; i++) {
    await tracing.serve("S/M", undefined, {}, async () => undefined);
    await tracing.set(false);
    await tracing.set(true);
  }
  await tracing.shutdown();
  const warnings = log.lines.filter((l) => l.startsWith("warn tracing: export"));
  assert.equal(warnings.length, 1, log.lines.join("\n"));
  assert.match(
    warnings[0]!,
    /export to http:\/\/127\.0\.0\.1:9\/v1\/traces failed .*ECONNREFUSED; is a collector listening there\?/,
  );
});

test("the traces remembered per guest are bounded: the oldest are forgotten first", () => {
  const carried = new CarriedTraces();
  const tp = (i: number) => `00-${i.toString(16).padStart(32, "0")}-b7ad6b7169203331-01`;
  for (let i = 1; i <= 5000; i++) carried.add(tp(i));
  assert.equal(carried.has((1).toString(16).padStart(32, "0")), false);
  assert.equal(carried.has((5000).toString(16).padStart(32, "0")), true);
  assert.equal((carried as unknown as { ids: Set<string> }).ids.size, 1024);
});
