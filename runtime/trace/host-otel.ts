/**
 * The daemon's OpenTelemetry tracer and its OTLP/HTTP exporter, with guests' spans exported beside its own.
 * Loaded by host.ts the first time tracing is turned on, never before.
 */
import { context, type HrTime, type SpanContext, TraceFlags, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { defaultResource, type Resource, resourceFromAttributes } from "@opentelemetry/resources";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  type ReadableSpan,
  type SpanExporter,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { AcceptedSpan } from "./guest-import.ts";
import { spanBytes } from "./limits.ts";
import { remoteParent, runInSpan, traceparentOf } from "./otel-run.ts";
import { SpanBuffer } from "./span-buffer.ts";
import type { SpanAttributes } from "./ttrpc-server.ts";

/** Guests' spans waiting for the exporter, across all sandboxes; past either bound they are dropped and counted. */
const GUEST_QUEUE_SPANS = 4096;
const GUEST_QUEUE_BYTES = 4 << 20;
const EXPORT_BATCH = 512;
const EXPORT_TIMEOUT_MS = 10_000;

export interface HostTracerOptions {
  endpoint: string;
  version: string;
  /** Tests: spans go here instead of OTLP/HTTP to `endpoint`. */
  exporter?: SpanExporter;
  /** Told of each failed export (the collector is down or refused). */
  onExportError(err: Error | undefined): void;
}

export interface HostTracer {
  /** A server span for a request, child of the caller's `traceparent`, else the root of a new trace. */
  server<T>(
    name: string,
    traceparent: string | undefined,
    attributes: SpanAttributes,
    fn: () => Promise<T>,
  ): Promise<T>;
  /** A client span for a call made under an active span, `fn` given its traceparent; outside one, `fn` alone. */
  client<T>(name: string, attributes: SpanAttributes, fn: (traceparent: string | undefined) => Promise<T>): Promise<T>;
  /** A finished span under the active span, between two performance.now() readings. */
  record(name: string, startMs: number, endMs: number, attributes: SpanAttributes): void;
  /** Queues a guest's spans for export as service vmm-task of `sandboxId`; returns how many did not fit. */
  exportGuest(sandboxId: string, spans: AcceptedSpan[]): number;
  /** Exports what is queued. */
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

export function createHostTracer(opts: HostTracerOptions): HostTracer {
  const exporter = reporting(
    opts.exporter ?? new OTLPTraceExporter({ url: opts.endpoint, timeoutMillis: EXPORT_TIMEOUT_MS }),
    opts.onExportError,
  );
  const provider = new BasicTracerProvider({
    resource: defaultResource().merge(
      resourceFromAttributes({ [ATTR_SERVICE_NAME]: "vmm-sandboxer", [ATTR_SERVICE_VERSION]: opts.version }),
    ),
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        scheduledDelayMillis: 1000,
        maxQueueSize: 2048,
        maxExportBatchSize: EXPORT_BATCH,
        exportTimeoutMillis: EXPORT_TIMEOUT_MS,
      }),
    ],
  });
  // The active span follows the work across awaits; a second enable after a disable finds it set already.
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const tracer = provider.getTracer("kuasar-vmm", opts.version);
  const guests = new GuestExport(exporter);

  return {
    server: (name, traceparent, attributes, fn) =>
      runInSpan(tracer, name, "server", attributes, remoteParent(traceparent), () => fn()),
    client(name, attributes, fn) {
      const parent = context.active();
      if (!trace.getSpan(parent)) return fn(undefined);
      return runInSpan(tracer, name, "client", attributes, parent, (ctx) => fn(traceparentOf(ctx)));
    },
    record(name, startMs, endMs, attributes) {
      tracer.startSpan(name, { startTime: startMs, attributes }, context.active()).end(endMs);
    },
    exportGuest: (sandboxId, spans) => guests.add(sandboxId, spans),
    async flush() {
      await Promise.all([provider.forceFlush(), guests.flush()]);
    },
    async shutdown() {
      await guests.flush();
      await provider.shutdown();
    },
  };
}

/** An exporter that tells `onError` of each failed export. */
function reporting(inner: SpanExporter, onError: (err: Error | undefined) => void): SpanExporter {
  return {
    export(spans, done) {
      inner.export(spans, (r: ExportResult) => {
        if (r.code !== ExportResultCode.SUCCESS) onError(r.error);
        done(r);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}

/** Guests' spans on their way to the exporter: a bounded queue, one export at a time, never waited on by a drain. */
class GuestExport {
  private readonly queue = new SpanBuffer<ReadableSpan>(GUEST_QUEUE_SPANS, GUEST_QUEUE_BYTES);
  private exporting: Promise<void> | undefined;

  constructor(private readonly exporter: SpanExporter) {}

  add(sandboxId: string, spans: AcceptedSpan[]): number {
    if (spans.length === 0) return 0;
    // One resource per drain, set here: a guest never names its service or its sandbox.
    const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: "vmm-task", "sandbox.id": sandboxId });
    let dropped = 0;
    for (const s of spans) if (!this.queue.push(readable(s, resource), spanBytes(s))) dropped++;
    void this.pump();
    return dropped;
  }

  /** Exports until the queue is empty. */
  async flush(): Promise<void> {
    while (this.exporting || this.queue.length > 0) await (this.exporting ?? this.pump());
  }

  private pump(): Promise<void> {
    this.exporting ??= (async () => {
      while (this.queue.length > 0) {
        // Drops were counted by add(), per sandbox.
        const { items } = this.queue.take(EXPORT_BATCH);
        await new Promise<void>((resolve) => this.exporter.export(items, () => resolve()));
      }
    })().finally(() => {
      this.exporting = undefined;
    });
    return this.exporting;
  }
}

function hr(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

/** A guest span in the form the exporter takes, under the resource the host chose. */
function readable(s: AcceptedSpan, resource: Resource): ReadableSpan {
  const ctx: SpanContext = { traceId: s.traceId, spanId: s.spanId, traceFlags: TraceFlags.SAMPLED };
  return {
    name: s.name,
    kind: s.kind,
    spanContext: () => ctx,
    ...(s.parentSpanId
      ? { parentSpanContext: { traceId: s.traceId, spanId: s.parentSpanId, traceFlags: TraceFlags.SAMPLED } }
      : {}),
    startTime: hr(s.startNs),
    endTime: hr(s.endNs),
    duration: hr(s.endNs - s.startNs),
    status: s.statusMessage ? { code: s.statusCode, message: s.statusMessage } : { code: s.statusCode },
    attributes: s.attributes,
    links: [],
    events: [],
    ended: true,
    resource,
    instrumentationScope: { name: "vmm-task" },
    droppedAttributesCount: s.droppedAttributes,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}
