/**
 * The guest agent's tracing: a request whose metadata carries a sampled traceparent runs in a span, child of the
 * host's, and the finished spans wait in a bounded buffer until the host drains them (DrainSpans). Until the first
 * such request nothing of OpenTelemetry is loaded: the agent's start does not pay for it (guest-otel.ts).
 */
import { create } from "@bufbuild/protobuf";
import { GuestSpanSchema } from "../protos/gen/kuasar/sandbox_pb.ts";
import type { DrainReply, GuestRecorder } from "./guest-otel.ts";
import { sampledTraceparent } from "./traceparent.ts";
import type { ServerTracer, SpanAttributes } from "./ttrpc-server.ts";

export class GuestTracing implements ServerTracer {
  private recorder: GuestRecorder | undefined;
  private loading: Promise<GuestRecorder> | undefined;

  traces(traceparent: string | undefined): boolean {
    return sampledTraceparent(traceparent);
  }

  serve<T>(
    name: string,
    traceparent: string | undefined,
    attributes: SpanAttributes,
    fn: () => Promise<T>,
  ): Promise<T> {
    if (!sampledTraceparent(traceparent)) return fn();
    if (this.recorder) return this.recorder.serve(name, traceparent, attributes, fn);
    // Should OpenTelemetry fail to load, the request is still served, untraced.
    return this.load().then(
      (r) => r.serve(name, traceparent, attributes, fn),
      () => fn(),
    );
  }

  /** Up to `max` finished spans, oldest first, and how many the buffer dropped since the last drain. */
  drain(max: number): DrainReply {
    return this.recorder ? this.recorder.drain(max) : { spans: [], dropped: 0 };
  }

  private load(): Promise<GuestRecorder> {
    this.loading ??= import("./guest-otel.ts").then((m) => {
      this.recorder = m.createGuestRecorder((fields) => create(GuestSpanSchema, fields));
      return this.recorder;
    });
    return this.loading;
  }
}
