import { GuestTracing } from "../../trace/guest.ts";

/**
 * The agent's tracing: a request whose metadata carries a sampled traceparent runs in a span, and DrainSpans hands
 * the finished spans to the host. OpenTelemetry is loaded on the first such request, not at start.
 */
export const guestTracing = new GuestTracing();
