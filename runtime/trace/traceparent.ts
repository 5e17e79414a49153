/**
 * The W3C trace-context header as ttrpc and gRPC metadata carry it. Only the cheap check lives here: whether a
 * request asks to be traced at all, decided before OpenTelemetry is loaded. The full parse is the OpenTelemetry
 * propagator's, once loaded.
 */
export const TRACEPARENT = "traceparent";

/** Version 00, 32 + 16 lowercase hex ids, flags: the form W3C trace context version 00 defines. */
const FORM = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Whether `value` is a well-formed traceparent with the sampled flag set. */
export function sampledTraceparent(value: string | undefined): boolean {
  if (value === undefined) return false;
  const m = FORM.exec(value);
  return m !== null && (Number.parseInt(m[3]!, 16) & 1) === 1;
}

/** The trace id of a well-formed traceparent (lowercase hex), else undefined. */
export function traceIdOf(value: string): string | undefined {
  return FORM.exec(value)?.[1];
}

/** The first value of a metadata key, from ttrpc's map or gRPC's Metadata. */
export function firstValue(values: readonly unknown[] | undefined): string | undefined {
  const v = values?.[0];
  return typeof v === "string" ? v : undefined;
}
