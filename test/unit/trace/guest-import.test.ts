import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  DrainSpansResponseSchema,
  type GuestSpan,
  GuestSpanSchema,
} from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { importGuestSpans } from "../../../runtime/trace/guest-import.ts";
import {
  MAX_ATTRIBUTES,
  MAX_DRAIN_BYTES,
  MAX_KEY_CHARS,
  MAX_NAME_CHARS,
  MAX_SPANS_PER_DRAIN,
  MAX_VALUE_CHARS,
} from "../../../runtime/trace/limits.ts";

// Guest spans are attacker input to the root daemon: each test below sends what a hostile guest could.
const TRACE = "0af7651916cd43dd8448eb211c80319c";
const NOW = BigInt(Date.now()) * 1_000_000n;
const hex = (s: string) => Buffer.from(s, "hex");
let next = 1;

function span(over: Partial<Omit<GuestSpan, "$typeName" | "$unknown">> = {}): GuestSpan {
  return create(GuestSpanSchema, {
    traceId: hex(TRACE),
    spanId: hex((next++).toString(16).padStart(16, "0")),
    parentSpanId: hex("b7ad6b7169203331"),
    name: "containerd.task.v3.Task/Exec",
    kind: 1,
    startTimeUnixNano: NOW - 5_000_000n,
    endTimeUnixNano: NOW,
    attributes: { "container.id": "c1" },
    ...over,
  });
}

function imported(spans: GuestSpan[], dropped = 0) {
  return importGuestSpans(create(DrainSpansResponseSchema, { spans, dropped }), (t) => t === TRACE, NOW);
}

test("a well-formed span comes through as the guest sent it, ids in hex", () => {
  const got = imported([span({ spanId: hex("00f067aa0ba902b7"), statusCode: 2, statusMessage: "exit 1" })], 3);
  assert.deepEqual(got.spans, [
    {
      traceId: TRACE,
      spanId: "00f067aa0ba902b7",
      parentSpanId: "b7ad6b7169203331",
      name: "containerd.task.v3.Task/Exec",
      kind: 1,
      startNs: NOW - 5_000_000n,
      endNs: NOW,
      attributes: { "container.id": "c1" },
      droppedAttributes: 0,
      statusCode: 2,
      statusMessage: "exit 1",
    },
  ]);
  assert.deepEqual(got.dropped, { spans: 0, bytes: 0, ids: 0, trace: 0, time: 0 });
  assert.equal(got.guestDropped, 3);
  assert.equal(imported([span({ parentSpanId: new Uint8Array() })]).spans[0]!.parentSpanId, undefined, "a root");
});

test("attack: more spans than a drain takes", () => {
  const got = imported(Array.from({ length: MAX_SPANS_PER_DRAIN + 44 }, () => span()));
  assert.equal(got.spans.length, MAX_SPANS_PER_DRAIN);
  assert.equal(got.dropped.spans, 44);
});

test("attack: spans whose strings add up past the drain's byte bound", () => {
  const fat = () => {
    const attributes: Record<string, string> = {};
    for (let i = 0; i < MAX_ATTRIBUTES; i++) attributes[`k${i}`] = "€".repeat(MAX_VALUE_CHARS);
    return span({ attributes });
  };
  const got = imported(Array.from({ length: 100 }, fat));
  const bytes = got.spans.reduce(
    (n, s) => n + Object.values(s.attributes).reduce((m, v) => m + Buffer.byteLength(v), 0),
    0,
  );
  assert.ok(bytes <= MAX_DRAIN_BYTES, `${bytes} bytes kept`);
  assert.ok(got.spans.length > 0 && got.dropped.bytes === 100 - got.spans.length, JSON.stringify(got.dropped));
});

test("attack: attributes past the per-span bound are counted, not kept", () => {
  const attributes: Record<string, string> = {};
  for (let i = 0; i < 1000; i++) attributes[`a${i}`] = "v";
  const [s] = imported([span({ attributes, droppedAttributes: 5 })]).spans;
  assert.equal(Object.keys(s!.attributes).length, MAX_ATTRIBUTES);
  assert.equal(s!.droppedAttributes, 1000 - MAX_ATTRIBUTES + 5);
});

test("attack: long names, keys, values and status messages are cut to their bounds", () => {
  const long = "x".repeat(100_000);
  const [s] = imported([
    span({
      name: long,
      statusMessage: long,
      attributes: { [`k${long.slice(0, MAX_KEY_CHARS)}`]: "too long a key", "bad key!": "v", ok: long },
    }),
  ]).spans;
  assert.equal(s!.name.length, MAX_NAME_CHARS);
  assert.equal(s!.statusMessage.length, MAX_VALUE_CHARS);
  assert.deepEqual(Object.keys(s!.attributes), ["ok"]);
  assert.equal(s!.attributes.ok!.length, MAX_VALUE_CHARS);
  assert.equal(s!.droppedAttributes, 2);
});

test("attack: malformed ids are refused", () => {
  const got = imported([
    span({ traceId: hex("0af7651916cd43dd") }),
    span({ traceId: new Uint8Array(16) }),
    span({ spanId: hex("b7ad6b71692033") }),
    span({ spanId: new Uint8Array(8) }),
    span({ parentSpanId: hex("b7ad6b7169203331b7") }),
    span({ parentSpanId: new Uint8Array(8) }),
  ]);
  assert.deepEqual(got.spans, []);
  assert.equal(got.dropped.ids, 6);
});

test("attack: a span in a trace the host did not carry into this guest is refused", () => {
  const got = imported([span({ traceId: hex("11111111111111111111111111111111") })]);
  assert.deepEqual(got.spans, []);
  assert.equal(got.dropped.trace, 1);
});

test("attack: times that run backwards or lie far from the host's clock are refused", () => {
  const hour = 3_600_000_000_000n;
  const got = imported([
    span({ startTimeUnixNano: NOW, endTimeUnixNano: NOW - 1n }),
    span({ startTimeUnixNano: NOW - 2n * hour, endTimeUnixNano: NOW }),
    span({ startTimeUnixNano: NOW, endTimeUnixNano: NOW + hour }),
    span({ startTimeUnixNano: 0n, endTimeUnixNano: 0xffff_ffff_ffff_ffffn }),
  ]);
  assert.deepEqual(got.spans, []);
  assert.equal(got.dropped.time, 4);
});

test("kinds and status codes outside OpenTelemetry's are read as internal and unset", () => {
  const [s] = imported([span({ kind: 99, statusCode: 7 })]).spans;
  assert.equal(s!.kind, 0);
  assert.equal(s!.statusCode, 0);
});
