import type { DescService } from "@bufbuild/protobuf";
import type { CallContext, ServiceHandlers } from "../ttrpc/index.ts";
import { firstValue, TRACEPARENT } from "./traceparent.ts";

export type SpanAttributes = Record<string, string | number | boolean>;

/** What serves a span per request: the daemon's tracing, or the guest's. */
export interface ServerTracer {
  /** Whether a request with this traceparent (or none) gets a span; if not it goes straight to its handler. */
  traces(traceparent: string | undefined): boolean;
  /** Runs `fn` in a server span named `name`, child of the caller's `traceparent` when it sent one. */
  serve<T>(name: string, traceparent: string | undefined, attributes: SpanAttributes, fn: () => Promise<T>): Promise<T>;
}

/**
 * Wraps a ttrpc service's unary handlers so each request runs in a span named "<service>/<Method>" as called on
 * the wire (v2 and v3 of the task API stay apart), with `attributes` and the request's container and exec ids.
 * Streaming handlers are left as they are: a stream lives as long as the container's stdio.
 */
export function traceServer<S extends DescService>(
  service: S,
  handlers: ServiceHandlers<S>,
  tracer: ServerTracer,
  attributes: SpanAttributes = {},
): ServiceHandlers<S> {
  const out: Record<string, unknown> = { ...handlers };
  for (const desc of service.methods) {
    const handler = (handlers as Record<string, unknown>)[desc.localName] as
      | ((req: unknown, ctx: CallContext) => unknown)
      | undefined;
    if (desc.methodKind !== "unary" || !handler) continue;
    out[desc.localName] = (req: unknown, ctx: CallContext) => {
      const traceparent = firstValue(ctx.metadata.get(TRACEPARENT));
      if (!tracer.traces(traceparent)) return handler(req, ctx);
      return tracer.serve(`${ctx.service}/${ctx.method}`, traceparent, { ...attributes, ...idsOf(req) }, async () =>
        handler(req, ctx),
      );
    };
  }
  return out as ServiceHandlers<S>;
}

/** The task API's container and exec ids, where a request has them. */
export function idsOf(req: unknown): SpanAttributes {
  const r = req as { id?: unknown; execId?: unknown };
  const ids: SpanAttributes = {};
  if (typeof r.id === "string" && r.id !== "") ids["container.id"] = r.id;
  if (typeof r.execId === "string" && r.execId !== "") ids["exec.id"] = r.execId;
  return ids;
}
