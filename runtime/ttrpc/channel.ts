import type { Duplex } from "node:stream";
import { byteLength } from "./codec.ts";
import { Code, TtrpcError } from "./errors.ts";
import { encodeHeader, FrameParser, type FrameSink, MAX_DATA_LENGTH } from "./frame.ts";

/** Bytes queued for writing above which senders of stream data wait for 'drain'. */
const WRITE_HIGH_WATER = 1 << 20;
/** Pieces smaller than this are merged into one buffer per write; larger ones are written as they are. */
const COPY_LIMIT = 2 << 10;
/** How long one stream's full receive queue may stall reading for all streams. */
export const STALL_TIMEOUT_MS = 1000;

export interface ChannelHandler extends FrameSink {
  /** The connection is gone (peer closed, error, or destroy()); called once. */
  onClose(err: Error | undefined): void;
}

/**
 * One ttrpc connection over any Duplex: frame parsing, batched writes (all
 * frames produced in one tick leave in one write), write backpressure, and
 * pausing reads while a stream's consumer falls behind.
 */
export class Channel {
  private readonly parser: FrameParser;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private drainWaiters: Array<() => void> = [];
  private flushWaiters: Array<() => void> = [];
  private readonly stalls = new Map<object, NodeJS.Timeout>();
  private closeError: Error | undefined;
  closed = false;

  constructor(
    readonly duplex: Duplex,
    private readonly handler: ChannelHandler,
  ) {
    this.parser = new FrameParser(handler);
    duplex.on("data", this.onData);
    duplex.on("drain", this.onDrain);
    duplex.on("error", this.onError);
    // ttrpc has no half-close: a peer that stops sending is gone.
    duplex.on("end", this.onEnd);
    duplex.on("close", this.onDuplexClose);
  }

  /** Queues one frame; false means the caller should await drained() before sending more stream data. */
  send(streamId: number, type: number, flags: number, parts: readonly Uint8Array[]): boolean {
    const length = byteLength(parts);
    if (length > MAX_DATA_LENGTH) {
      throw new TtrpcError(
        Code.ResourceExhausted,
        `message length ${length} exceeds maximum message size of ${MAX_DATA_LENGTH}`,
      );
    }
    if (this.closed) return false;
    this.pending.push(encodeHeader(length, streamId, type, flags));
    for (const p of parts) if (p.length > 0) this.pending.push(p);
    this.pendingBytes += length + 10;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flush);
    }
    return !this.needDrain();
  }

  /**
   * Like send(), but resolves once the frame has been written out, so the
   * caller may reuse buffers it sent by reference (and waits as long as the
   * connection is congested).
   */
  sendWritten(streamId: number, type: number, flags: number, parts: readonly Uint8Array[]): Promise<void> {
    this.send(streamId, type, flags, parts);
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }

  /** Resolves once queued bytes fall below the high-water mark (or the channel closed). */
  drained(): Promise<void> {
    if (this.closed || !this.needDrain()) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Stops reading on behalf of `key` until release(key); after STALL_TIMEOUT_MS onTimeout runs and reading resumes. */
  stall(key: object, onTimeout: () => void): void {
    if (this.closed || this.stalls.has(key)) return;
    const timer = setTimeout(() => {
      this.release(key);
      onTimeout();
    }, STALL_TIMEOUT_MS);
    this.stalls.set(key, timer);
    this.duplex.pause();
  }

  release(key: object): void {
    const timer = this.stalls.get(key);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.stalls.delete(key);
    if (this.stalls.size === 0 && !this.closed) this.duplex.resume();
  }

  /** Flushes what is queued, then closes the connection. */
  end(): void {
    if (this.closed) return;
    this.flush();
    this.duplex.end(() => this.destroy());
  }

  destroy(err?: Error): void {
    if (err && !this.closeError) this.closeError = err;
    if (!this.duplex.destroyed) this.duplex.destroy();
    this.finish();
  }

  private needDrain(): boolean {
    return this.pendingBytes + this.duplex.writableLength >= WRITE_HIGH_WATER;
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const parts = this.pending;
    if (parts.length === 0) return;
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    if (this.closed || !this.duplex.writable) {
      resolveAll(this.flushWaiters);
      this.flushWaiters = [];
      return;
    }
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    // called once the last piece is written; the stream calls it with an error if destroyed first
    const written = waiters.length === 0 ? undefined : () => resolveAll(waiters);
    if (parts.length === 1) {
      this.duplex.write(parts[0], written);
    } else if (bytes < COPY_LIMIT) {
      this.duplex.write(Buffer.concat(parts, bytes), written);
    } else {
      // small pieces (headers, envelopes, small messages) are merged; large
      // ones (payloads sent by reference) go out vectored (writev), uncopied
      const out: Uint8Array[] = [];
      let run: Uint8Array[] = [];
      let runBytes = 0;
      for (const p of parts) {
        if (p.length < COPY_LIMIT) {
          run.push(p);
          runBytes += p.length;
          continue;
        }
        if (run.length > 0) {
          out.push(run.length === 1 ? run[0]! : Buffer.concat(run, runBytes));
          run = [];
          runBytes = 0;
        }
        out.push(p);
      }
      if (run.length > 0) out.push(run.length === 1 ? run[0]! : Buffer.concat(run, runBytes));
      this.duplex.cork();
      for (let i = 0; i < out.length; i++) this.duplex.write(out[i], i === out.length - 1 ? written : undefined);
      this.duplex.uncork();
    }
    if (!this.duplex.writableNeedDrain) this.onDrain();
  };

  private readonly onData = (chunk: Buffer | string | Uint8Array): void => {
    if (this.closed) return;
    const buf =
      typeof chunk === "string"
        ? Buffer.from(chunk)
        : Buffer.isBuffer(chunk)
          ? chunk
          : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    try {
      this.parser.push(buf);
    } catch (err) {
      // a malformed header (or a bug handling a frame) ends this connection only
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  };

  private readonly onDrain = (): void => {
    if (this.drainWaiters.length === 0 || this.needDrain()) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  };

  private readonly onError = (err: Error): void => {
    this.destroy(err);
  };

  private readonly onEnd = (): void => {
    this.destroy();
  };

  private readonly onDuplexClose = (): void => {
    this.finish();
  };

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.stalls.values()) clearTimeout(timer);
    this.stalls.clear();
    this.pending = [];
    this.pendingBytes = 0;
    resolveAll(this.drainWaiters);
    this.drainWaiters = [];
    resolveAll(this.flushWaiters);
    this.flushWaiters = [];
    this.duplex.off("data", this.onData);
    this.duplex.off("drain", this.onDrain);
    this.duplex.off("end", this.onEnd);
    this.duplex.off("close", this.onDuplexClose);
    // keep an error listener: a late 'error' from a destroyed stream must not crash the process
    this.handler.onClose(this.closeError);
  }
}

function resolveAll(waiters: Array<() => void>): void {
  for (const w of waiters) w();
}
