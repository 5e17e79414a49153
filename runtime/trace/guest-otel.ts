/**
 * The guest's OpenTelemetry tracer, recording into a bounded buffer; loaded by guest.ts on the first traced request.
 * The agent's build bundles it into a file of its own (pipeline/stages/vmm-task.ts), so it imports no runtime code
 * the agent's bundle also holds: the protobuf runtime comes in as the `toMessage` argument.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HrTime } from "@opentelemetry/api";
import { BasicTracerProvider, type ReadableSpan, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { GuestSpan, GuestSpanSchema } from "../protos/gen/kuasar/sandbox_pb.ts";
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

/** A GuestSpan message from its fields (the caller's protobuf `create`). */
export type ToGuestSpan = (fields: MessageInitShape<typeof GuestSpanSchema>) => GuestSpan;

export function createGuestRecorder(toMessage: ToGuestSpan): GuestRecorder {
  const buffer = new SpanBuffer<GuestSpan>(GUEST_BUFFER_SPANS, GUEST_BUFFER_BYTES);
  const toBuffer: SpanProcessor = {
    onStart() {},
    onEnd(span) {
      const s = toMessage(guestSpan(span));
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

function guestSpan(span: ReadableSpan): MessageInitShape<typeof GuestSpanSchema> {
  const ctx = span.spanContext();
  const attributes: Record<string, string> = {};
  for (const [k, v] of Object.entries(span.attributes)) if (v !== undefined) attributes[k] = String(v);
  return {
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
  };
}
