import assert from "node:assert/strict";
import { test } from "node:test";
import { GuestTracing } from "../../../runtime/trace/guest.ts";
import { GUEST_BUFFER_SPANS, MAX_DRAIN_BYTES, MAX_SPANS_PER_DRAIN } from "../../../runtime/trace/limits.ts";

const TRACE = "0af7651916cd43dd8448eb211c80319c";
const PARENT = "b7ad6b7169203331";
const SAMPLED = `00-${TRACE}-${PARENT}-01`;
const loaded = (g: GuestTracing) => (g as unknown as { recorder?: unknown }).recorder !== undefined;

test("a request without a sampled traceparent is served untraced, and OpenTelemetry stays unloaded", async () => {
  const g = new GuestTracing();
  for (const tp of [undefined, `00-${TRACE}-${PARENT}-00`, "junk"]) {
    assert.equal(g.traces(tp), false);
    assert.equal(await g.serve("S/M", tp, {}, async () => "ok"), "ok");
  }
  assert.equal(loaded(g), false);
  assert.deepEqual(g.drain(100), { spans: [], dropped: 0 });
});

test("a traced request's span is the host span's child, kept until drained", async () => {
  const g = new GuestTracing();
  assert.equal(g.traces(SAMPLED), true);
  const before = BigInt(Date.now()) * 1_000_000n;
  await g.serve("containerd.task.v3.Task/Exec", SAMPLED, { "container.id": "c1", "exec.id": "e1" }, async () => 1);
  await assert.rejects(
    g.serve("containerd.task.v3.Task/Start", SAMPLED, {}, async () => {
      throw new Error("no such container");
    }),
  );
  const { spans, dropped } = g.drain(100);
  assert.equal(dropped, 0);
  assert.equal(spans.length, 2);
  const [exec, start] = spans;
  assert.equal(Buffer.from(exec!.traceId as Uint8Array).toString("hex"), TRACE);
  assert.equal(Buffer.from(exec!.parentSpanId as Uint8Array).toString("hex"), PARENT);
  assert.equal((exec!.spanId as Uint8Array).length, 8);
  assert.equal(exec!.name, "containerd.task.v3.Task/Exec");
  assert.equal(exec!.kind, 1, "server");
  assert.deepEqual(exec!.attributes, { "container.id": "c1", "exec.id": "e1" });
  assert.ok((exec!.startTimeUnixNano as bigint) >= before - 1_000_000n, "wall-clock times");
  assert.ok((exec!.endTimeUnixNano as bigint) >= (exec!.startTimeUnixNano as bigint));
  assert.equal(start!.statusCode, 2);
  assert.equal(start!.statusMessage, "no such container");
  assert.deepEqual(g.drain(100).spans, [], "a drain empties what it took");
});

test("attack on the guest's memory: the buffer holds GUEST_BUFFER_SPANS, drops the rest and says how many", async () => {
  const g = new GuestTracing();
  const extra = 52;
  for (let i = 0; i < GUEST_BUFFER_SPANS + extra; i++) await g.serve("S/M", SAMPLED, {}, async () => undefined);
  const first = g.drain(10_000);
  assert.equal(first.spans.length, MAX_SPANS_PER_DRAIN, "one drain hands over at most this many");
  assert.equal(first.dropped, extra);
  let total = first.spans.length;
  for (let d = g.drain(10_000); d.spans.length > 0; d = g.drain(10_000)) total += d.spans.length;
  assert.equal(total, GUEST_BUFFER_SPANS);
});

test("a drain keeps to the host's byte bound, so the host takes it whole", async () => {
  const g = new GuestTracing();
  const big = "v".repeat(400);
  const attributes = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`k${i}`, big]));
  for (let i = 0; i < 100; i++) await g.serve("S/M", SAMPLED, attributes, async () => undefined);
  const { spans } = g.drain(MAX_SPANS_PER_DRAIN);
  const bytes = spans.reduce((n, s) => n + Object.values(s.attributes ?? {}).join("").length, 0);
  assert.ok(spans.length < 100 && bytes <= MAX_DRAIN_BYTES, `${spans.length} spans, ${bytes} bytes`);
});
