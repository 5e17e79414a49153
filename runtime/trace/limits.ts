/**
 * Bounds on the spans a guest hands over (docs/operating.md#traces). The guest keeps to them so its spans arrive
 * whole; the host enforces them, since a guest's spans are attacker input to the root daemon (docs/security.md).
 */

/** The guest's buffer of finished spans between two drains; past either bound new spans are dropped and counted. */
export const GUEST_BUFFER_SPANS = 2048;
export const GUEST_BUFFER_BYTES = 1 << 20;

/** Spans the host takes per drain, and their total string bytes: the rest is dropped and counted. */
export const MAX_SPANS_PER_DRAIN = 256;
export const MAX_DRAIN_BYTES = 256 << 10;

/** Per span: attributes kept (the rest counted as dropped), and the longest name, key and value kept. */
export const MAX_ATTRIBUTES = 32;
export const MAX_NAME_CHARS = 128;
export const MAX_KEY_CHARS = 64;
export const MAX_VALUE_CHARS = 512;

/** How often the host drains each traced guest while tracing is on. */
export const DRAIN_INTERVAL_MS = 2000;

/** What a span counts against MAX_DRAIN_BYTES and the buffers' byte bounds: its strings' UTF-8 bytes and 64. */
export function spanBytes(s: { name: string; statusMessage: string; attributes: Record<string, string> }): number {
  let n = 64 + Buffer.byteLength(s.name) + Buffer.byteLength(s.statusMessage);
  for (const [k, v] of Object.entries(s.attributes)) n += Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}
