// Protobuf varint writing for the hand-encoded paths (the ttrpc envelope, flat messages). Values are non-negative
// numbers up to 2^53; division instead of shifts keeps those above 2^31 exact.

/** Bytes a varint of `v` takes. */
export function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Writes `v` as a varint at `off`; returns the offset after it. */
export function writeVarint(buf: Buffer, off: number, v: number): number {
  while (v >= 0x80) {
    buf[off++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[off++] = v;
  return off;
}
