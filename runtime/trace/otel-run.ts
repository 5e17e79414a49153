/** Running work in OpenTelemetry spans; loaded with OpenTelemetry itself, only once tracing is on. */
import {
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { TRACEPARENT } from "./traceparent.ts";
import type { SpanAttributes } from "./ttrpc-server.ts";

const propagator = new W3CTraceContextPropagator();

const KINDS = { internal: SpanKind.INTERNAL, server: SpanKind.SERVER, client: SpanKind.CLIENT } as const;
type KindName = keyof typeof KINDS;

/** A context whose parent is the remote span `traceparent` names; the root context when it names none. */
export function remoteParent(traceparent: string | undefined): Context {
  if (traceparent === undefined) return ROOT_CONTEXT;
  return propagator.extract(ROOT_CONTEXT, { [TRACEPARENT]: traceparent }, defaultTextMapGetter);
}

/** The traceparent of the span active in `ctx`, for a request's metadata. */
export function traceparentOf(ctx: Context): string | undefined {
  const carrier: Record<string, string> = {};
  propagator.inject(ctx, carrier, defaultTextMapSetter);
  return carrier[TRACEPARENT];
}

/** Runs `fn` in a span under `parent`, active while it runs; an error it throws marks the span and passes on. */
export function runInSpan<T>(
  tracer: Tracer,
  name: string,
  kind: KindName,
  attributes: SpanAttributes,
  parent: Context,
  fn: (ctx: Context) => Promise<T>,
): Promise<T> {
  const span = tracer.startSpan(name, { kind: KINDS[kind], attributes }, parent);
  const ctx = trace.setSpan(parent, span);
  return context
    .with(ctx, () => fn(ctx))
    .then(
      (v) => {
        span.end();
        return v;
      },
      (err: unknown) => {
        span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
        span.end();
        throw err;
      },
    );
}
