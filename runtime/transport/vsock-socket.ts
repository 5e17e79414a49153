import { constants } from "node:os";
import { Duplex } from "node:stream";
import { type ErrnoError, errnoError, withAddress } from "./errno-error.ts";
import { type Handle, native, READABLE, WRITABLE } from "./vsock-addon.ts";
import { describeVsock, type VsockAddress } from "./vsock-address.ts";

// One scratch buffer for all reads: the loop is single-threaded and each chunk is copied out.
const scratch = Buffer.allocUnsafe(64 * 1024);

export interface VsockSocketOptions {
  /** Like net.Socket: when false (the default) the write side is ended once the peer ends. */
  allowHalfOpen?: boolean;
}

/**
 * A connected stream socket (AF_VSOCK, or AF_UNIX in tests: test/lib/vsock-testkit.ts) as a Duplex with
 * net.Socket's semantics: 'end' on EOF, end() shuts down the write side, destroy() closes, errors carry errno codes.
 */
export class VsockSocket extends Duplex {
  /** The peer; undefined over AF_UNIX. */
  readonly remoteCid: number | undefined;
  readonly remotePort: number | undefined;
  #h: Handle | null;
  readonly #label: string;
  #events = 0;
  #reading = false;
  #connecting = false;
  #pending: { buf: Buffer; cb: (err?: Error | null) => void } | null = null;

  constructor(fd: number, peer: VsockAddress | string, opts: VsockSocketOptions = {}) {
    super({ allowHalfOpen: opts.allowHalfOpen ?? false, decodeStrings: true });
    if (typeof peer !== "string") {
      this.remoteCid = peer.cid;
      this.remotePort = peer.port;
    }
    this.#label = describeVsock(peer);
    this.#h = native().watch(fd, (status, events) => this.#onPoll(status, events));
  }

  /** Adopts a socket whose non-blocking connect is in flight; resolves once it completes. */
  static connecting(
    fd: number,
    peer: VsockAddress | string,
    timeoutMs: number,
    opts?: VsockSocketOptions,
  ): Promise<VsockSocket> {
    const sock = new VsockSocket(fd, peer, opts);
    sock.#connecting = true;
    sock.#update();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sock.destroy(
          errnoError(constants.errno.ETIMEDOUT, "connect", `${sock.#label} (no answer within ${timeoutMs} ms)`),
        );
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        sock.off("connect", onConnect);
        reject(err);
      };
      const onConnect = () => {
        clearTimeout(timer);
        sock.off("error", onError);
        resolve(sock);
      };
      sock.once("error", onError);
      sock.once("connect", onConnect);
    });
  }

  ref(): this {
    if (this.#h) native().setRef(this.#h, true);
    return this;
  }

  unref(): this {
    if (this.#h) native().setRef(this.#h, false);
    return this;
  }

  override _read(): void {
    this.#reading = true;
    if (!this.#connecting) this.#drainReads();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#startWrite(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.#startWrite(Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.#h) {
      try {
        native().shutdown(this.#h);
      } catch (e) {
        // ENOTCONN: the peer already tore the connection down, so there is nothing left to flush.
        if ((e as ErrnoError).code !== "ENOTCONN") {
          cb(withAddress(e, this.#label));
          return;
        }
      }
    }
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.#h) native().close(this.#h);
    this.#h = null;
    const pending = this.#pending;
    this.#pending = null;
    if (pending) {
      const gone: ErrnoError = new Error(`write after the socket was destroyed ${this.#label}`);
      gone.code = "ERR_STREAM_DESTROYED";
      pending.cb(err ?? gone);
    }
    cb(err);
  }

  #onPoll(status: number, events: number): void {
    if (!this.#h) return;
    if (status < 0) {
      // libuv reports EPOLLERR as EBADF and stops watching; the socket's own error says what happened.
      this.#events = 0;
      const err = native().socketError(this.#h);
      const syscall = this.#connecting ? "connect" : this.#pending ? "write" : "read";
      this.destroy(errnoError(err || -status, syscall, this.#label));
      return;
    }
    if (this.#connecting) {
      if ((events & WRITABLE) === 0) return;
      const err = native().socketError(this.#h);
      if (err !== 0) {
        this.destroy(errnoError(err, "connect", this.#label));
        return;
      }
      this.#connecting = false;
      this.#update();
      this.emit("connect");
      if (this.#pending) this.#flushWrites();
      if (this.#reading) this.#drainReads();
      return;
    }
    if (events & WRITABLE) this.#flushWrites();
    if (events & READABLE) this.#drainReads();
  }

  #drainReads(): void {
    try {
      while (this.#reading && this.#h) {
        const n = native().read(this.#h, scratch);
        if (n < 0) break;
        if (n === 0) {
          this.#reading = false;
          this.push(null);
          break;
        }
        if (!this.push(Buffer.from(scratch.subarray(0, n)))) this.#reading = false;
      }
    } catch (e) {
      this.destroy(withAddress(e, this.#label));
      return;
    }
    this.#update();
  }

  #startWrite(buf: Buffer, cb: (err?: Error | null) => void): void {
    this.#pending = { buf, cb };
    if (!this.#connecting) this.#flushWrites();
  }

  #flushWrites(): void {
    try {
      while (this.#pending && this.#h) {
        const n = native().write(this.#h, this.#pending.buf);
        if (n < 0) break;
        if (n < this.#pending.buf.length) {
          this.#pending.buf = this.#pending.buf.subarray(n);
          continue;
        }
        const { cb } = this.#pending;
        this.#pending = null;
        cb();
      }
    } catch (e) {
      const pending = this.#pending;
      this.#pending = null;
      pending?.cb(withAddress(e, this.#label));
      return;
    }
    this.#update();
  }

  // Watch only for what is wanted now: level-triggered readiness would otherwise spin.
  #update(): void {
    if (!this.#h) return;
    const events = this.#connecting ? WRITABLE : (this.#reading ? READABLE : 0) | (this.#pending ? WRITABLE : 0);
    if (events === this.#events) return;
    this.#events = events;
    native().setEvents(this.#h, events);
  }
}
