// ttrpc framing: a 10-byte header (uint32 BE data length, uint32 BE stream id,
// uint8 type, uint8 flags) followed by the data.

export const HEADER_LENGTH = 10;
/** Largest data length either side accepts or sends. */
export const MAX_DATA_LENGTH = 4 << 20;
/** Lengths of 16 MiB and more have the reserved first byte set: not a ttrpc peer. */
const MALFORMED_LENGTH = 1 << 24;

export const MessageType = { Request: 1, Response: 2, Data: 3 } as const;
export const Flag = { RemoteClosed: 1, RemoteOpen: 2, NoData: 4 } as const;

export function encodeHeader(length: number, streamId: number, type: number, flags: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_LENGTH);
  h.writeUInt32BE(length, 0);
  h.writeUInt32BE(streamId, 4);
  h[8] = type;
  h[9] = flags;
  return h;
}

export interface FrameSink {
  /** A whole frame. `data` may be a view into the chunk it arrived in. */
  onFrame(streamId: number, type: number, flags: number, data: Buffer): void;
  /** A frame over MAX_DATA_LENGTH whose data is being skipped. */
  onOversize(streamId: number, type: number, flags: number, length: number): void;
}

/** The peer sent bytes that cannot be a ttrpc header; the connection is unusable. */
export class FrameError extends Error {
  override readonly name = "FrameError";
}

// Streamed frames assembled from several chunks are carved from slabs: fewer,
// larger allocations for the GC to track. Smaller frames use Node's pool, larger
// ones get a buffer of their own; an idle parser lets go of its slab so quiet
// connections pin no memory.
const SLAB_SIZE = 1 << 20;
const SLAB_MIN_FRAME = 16 << 10;
const SLAB_MAX_FRAME = SLAB_SIZE >> 2;

enum State {
  Header = 0,
  Data = 1,
  Discard = 2,
}

/**
 * Incremental frame parser. Frames that lie inside one chunk are handed out as
 * views (no copy); only frames split across chunks are assembled, with one copy
 * straight into a buffer of the final size.
 */
export class FrameParser {
  private state = State.Header;
  private readonly header = Buffer.alloc(HEADER_LENGTH);
  private headerFilled = 0;
  private length = 0;
  private streamId = 0;
  private type = 0;
  private flags = 0;
  private data: Buffer | null = null;
  private filled = 0;
  private discard = 0;
  private slab: Buffer | null = null;
  private slabUsed = 0;

  constructor(private readonly sink: FrameSink) {}

  /** True when no partial frame is buffered. */
  get idle(): boolean {
    return this.state === State.Header && this.headerFilled === 0;
  }

  push(chunk: Buffer): void {
    let off = 0;
    const end = chunk.length;
    while (true) {
      if (this.state === State.Header) {
        if (this.headerFilled === 0 && end - off >= HEADER_LENGTH) {
          this.readHeader(chunk, off);
          off += HEADER_LENGTH;
        } else {
          const n = Math.min(HEADER_LENGTH - this.headerFilled, end - off);
          chunk.copy(this.header, this.headerFilled, off, off + n);
          this.headerFilled += n;
          off += n;
          if (this.headerFilled < HEADER_LENGTH) {
            if (this.headerFilled === 0) this.slab = null;
            return;
          }
          this.headerFilled = 0;
          this.readHeader(this.header, 0);
        }
      }
      if (this.state === State.Discard) {
        const n = Math.min(this.discard, end - off);
        this.discard -= n;
        off += n;
        if (this.discard > 0) return;
        this.state = State.Header;
        continue;
      }
      // State.Data
      const length = this.length;
      if (this.data === null) {
        if (end - off >= length) {
          const data = chunk.subarray(off, off + length);
          off += length;
          this.state = State.Header;
          this.sink.onFrame(this.streamId, this.type, this.flags, data);
          continue;
        }
        this.data = this.allocate(length);
        this.filled = 0;
      }
      const n = Math.min(length - this.filled, end - off);
      chunk.copy(this.data, this.filled, off, off + n);
      this.filled += n;
      off += n;
      if (this.filled < length) return;
      const data = this.data;
      this.data = null;
      this.state = State.Header;
      this.sink.onFrame(this.streamId, this.type, this.flags, data);
    }
  }

  private allocate(length: number): Buffer {
    if (length < SLAB_MIN_FRAME) return Buffer.allocUnsafe(length);
    if (length > SLAB_MAX_FRAME) return Buffer.allocUnsafeSlow(length);
    if (this.slab === null || this.slabUsed + length > SLAB_SIZE) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
      this.slabUsed = 0;
    }
    const data = this.slab.subarray(this.slabUsed, this.slabUsed + length);
    this.slabUsed += (length + 7) & ~7; // keep views 8-byte aligned
    return data;
  }

  private readHeader(buf: Buffer, off: number): void {
    const length = buf.readUInt32BE(off);
    this.streamId = buf.readUInt32BE(off + 4);
    this.type = buf[off + 8]!;
    this.flags = buf[off + 9]!;
    if (length >= MALFORMED_LENGTH) {
      throw new FrameError(`ttrpc: malformed frame header (data length ${length}, reserved first byte set)`);
    }
    if (length > MAX_DATA_LENGTH) {
      this.discard = length;
      this.state = State.Discard;
      this.sink.onOversize(this.streamId, this.type, this.flags, length);
      return;
    }
    this.length = length;
    this.state = State.Data;
  }
}
