/**
 * The host's check of the spans a guest hands over (DrainSpans). They are attacker input to the root daemon
 * (docs/security.md): only well-formed spans in traces the host itself carried into this guest are kept, each
 * within the bounds of limits.ts, and whatever is left out is counted by reason rather than waited for.
 */
import type { DrainSpansResponse, GuestSpan } from "../protos/gen/kuasar/sandbox_pb.ts";
import {
  MAX_ATTRIBUTES,
  MAX_DRAIN_BYTES,
  MAX_KEY_CHARS,
  MAX_NAME_CHARS,
  MAX_SPANS_PER_DRAIN,
  MAX_VALUE_CHARS,
  spanBytes,
} from "./limits.ts";

/** A guest span as the host keeps it: ids in lowercase hex, strings within bounds. */
export interface AcceptedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  /** OpenTelemetry's SpanKind number (0 internal .. 4 consumer). */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, string>;
  droppedAttributes: number;
  /** OpenTelemetry's SpanStatusCode number (0 unset, 1 ok, 2 error). */
  statusCode: number;
  statusMessage: string;
}

export const DROP_REASONS = ["spans", "bytes", "ids", "trace", "time"] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** What each reason means, for the log line that reports drops. */
export const DROP_MEANING: Record<DropReason, string> = {
  spans: `over ${MAX_SPANS_PER_DRAIN} per drain`,
  bytes: `over ${MAX_DRAIN_BYTES} bytes per drain`,
  ids: "malformed trace or span id",
  trace: "in a trace the host did not carry into this guest",
  time: "start or end out of range",
};

export interface Imported {
  spans: AcceptedSpan[];
  dropped: Record<DropReason, number>;
  /** What the guest says its own buffer dropped (its word only; at most a uint32). */
  guestDropped: number;
}

/** How far from the host's clock a guest span may lie: the guest's clock is synced to it (sandboxer/agent.ts). */
const PAST_NS = 3600n * 1_000_000_000n;
const FUTURE_NS = 60n * 1_000_000_000n;
/** Attribute keys as OpenTelemetry's conventions spell them; anything else is left out. */
const KEY = /^[A-Za-z0-9_.-]+$/;

/**
 * Keeps the spans of a DrainSpans reply that are well formed, in a trace `knownTrace` accepts, and within
 * [now - 1 h, now + 1 min], up to MAX_SPANS_PER_DRAIN and MAX_DRAIN_BYTES; names, keys and values are cut to their
 * limits and attributes past MAX_ATTRIBUTES are counted as dropped.
 */
export function importGuestSpans(
  reply: DrainSpansResponse,
  knownTrace: (traceId: string) => boolean,
  nowNs: bigint,
): Imported {
  const dropped: Record<DropReason, number> = { spans: 0, bytes: 0, ids: 0, trace: 0, time: 0 };
  const spans: AcceptedSpan[] = [];
  let bytes = 0;
  for (const [i, s] of reply.spans.entries()) {
    if (i >= MAX_SPANS_PER_DRAIN) {
      dropped.spans += reply.spans.length - i;
      break;
    }
    const traceId = idHex(s.traceId, 16);
    const spanId = idHex(s.spanId, 8);
    const parentSpanId = s.parentSpanId.length === 0 ? undefined : idHex(s.parentSpanId, 8);
    if (!traceId || !spanId || parentSpanId === null) {
      dropped.ids++;
      continue;
    }
    if (!knownTrace(traceId)) {
      dropped.trace++;
      continue;
    }
    const start = s.startTimeUnixNano;
    const end = s.endTimeUnixNano;
    if (start > end || start < nowNs - PAST_NS || end > nowNs + FUTURE_NS) {
      dropped.time++;
      continue;
    }
    const span = bounded(s, traceId, spanId, parentSpanId);
    const size = spanBytes(span);
    if (bytes + size > MAX_DRAIN_BYTES) {
      dropped.bytes++;
      continue;
    }
    bytes += size;
    spans.push(span);
  }
  return { spans, dropped, guestDropped: reply.dropped };
}

/** Lowercase hex of an id of exactly `length` bytes, not all zero (W3C's invalid id); null when it is not one. */
function idHex(id: Uint8Array, length: number): string | null {
  if (id.length !== length || id.every((b) => b === 0)) return null;
  return Buffer.from(id).toString("hex");
}

function bounded(s: GuestSpan, traceId: string, spanId: string, parentSpanId: string | undefined): AcceptedSpan {
  const attributes: Record<string, string> = {};
  let kept = 0;
  let left = 0;
  for (const [k, v] of Object.entries(s.attributes)) {
    if (kept >= MAX_ATTRIBUTES || k.length > MAX_KEY_CHARS || !KEY.test(k)) {
      left++;
      continue;
    }
    attributes[k] = cut(v, MAX_VALUE_CHARS);
    kept++;
  }
  return {
    traceId,
    spanId,
    parentSpanId,
    name: cut(s.name, MAX_NAME_CHARS) || "(unnamed)",
    kind: s.kind <= 4 ? s.kind : 0,
    startNs: s.startTimeUnixNano,
    endNs: s.endTimeUnixNano,
    attributes,
    droppedAttributes: Math.min(s.droppedAttributes + left, 0xffff_ffff),
    statusCode: s.statusCode <= 2 ? s.statusCode : 0,
    statusMessage: cut(s.statusMessage, MAX_VALUE_CHARS),
  };
}

function cut(s: string, max: number): string {
  return s.length > max ? s.slice(0, max) : s;
}
