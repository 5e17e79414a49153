/** The guest's OpenTelemetry tracer, recording into a bounded buffer; loaded by guest.ts on the first traced request. */
import { create } from "@bufbuild/protobuf";
import type { HrTime } from "@opentelemetry/api";
import { BasicTracerProvider, type ReadableSpan, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { type GuestSpan, GuestSpanSchema } from "../protos/gen/kuasar/sandbox_pb.ts";
import {
  GUEST_BUFFER_BYTES,
  GUEST_BUFFER_SPANS,
  MAX_ATTRIBUTES,
  MAX_DRAIN_BYTES,
  MAX_NAME_CHARS,
  MAX_SPANS_PER_DRAIN,
  MAX_VALUE_CHARS,
  spanBytes,
} from "./limits.ts";
import { remoteParent, runInSpan } from "./otel-run.ts";
import { SpanBuffer } from "./span-buffer.ts";
import type { SpanAttributes } from "./ttrpc-server.ts";

/** A DrainSpans reply. */
export interface DrainReply {
  spans: GuestSpan[];
  dropped: number;
}

export interface GuestRecorder {
  serve<T>(name: string, traceparent: string | undefined, attributes: SpanAttributes, fn: () => Promise<T>): Promise<T>;
  drain(max: number): DrainReply;
}

export function createGuestRecorder(): GuestRecorder {
  const buffer = new SpanBuffer<GuestSpan>(GUEST_BUFFER_SPANS, GUEST_BUFFER_BYTES);
  const toBuffer: SpanProcessor = {
    onStart() {},
    onEnd(span) {
      const s = guestSpan(span);
      buffer.push(s, spanBytes(s));
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  };
  // The limits are the host's (limits.ts): spans that keep to them arrive whole.
  const provider = new BasicTracerProvider({
    spanProcessors: [toBuffer],
    spanLimits: { attributeCountLimit: MAX_ATTRIBUTES, attributeValueLengthLimit: MAX_VALUE_CHARS },
  });
  const tracer = provider.getTracer("vmm-task");
  return {
    serve: (name, traceparent, attributes, fn) =>
      runInSpan(tracer, name, "server", attributes, remoteParent(traceparent), () => fn()),
    drain(max) {
      const { items, dropped } = buffer.take(Math.min(max, MAX_SPANS_PER_DRAIN), MAX_DRAIN_BYTES);
      return { spans: items, dropped: Math.min(dropped, 0xffff_ffff) };
    },
  };
}

function ns(t: HrTime): bigint {
  return BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]);
}

function guestSpan(span: ReadableSpan): GuestSpan {
  const ctx = span.spanContext();
  const attributes: Record<string, string> = {};
  for (const [k, v] of Object.entries(span.attributes)) if (v !== undefined) attributes[k] = String(v);
  return create(GuestSpanSchema, {
    traceId: Buffer.from(ctx.traceId, "hex"),
    spanId: Buffer.from(ctx.spanId, "hex"),
    parentSpanId: span.parentSpanContext ? Buffer.from(span.parentSpanContext.spanId, "hex") : new Uint8Array(),
    name: span.name.slice(0, MAX_NAME_CHARS),
    kind: span.kind,
    startTimeUnixNano: ns(span.startTime),
    endTimeUnixNano: ns(span.endTime),
    attributes,
    statusCode: span.status.code,
    statusMessage: (span.status.message ?? "").slice(0, MAX_VALUE_CHARS),
    droppedAttributes: span.droppedAttributesCount,
  });
}
