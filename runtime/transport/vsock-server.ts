import { EventEmitter } from "node:events";
import { errnoError, withAddress } from "./errno-error.ts";
import { type Addon, type Handle, native, READABLE } from "./vsock-addon.ts";
import { checkU32, describeVsock, VMADDR_CID_ANY, type VsockAddress } from "./vsock-address.ts";
import { VsockSocket, type VsockSocketOptions } from "./vsock-socket.ts";

export interface VsockServerOptions extends VsockSocketOptions {
  backlog?: number;
}

/**
 * A listening socket: emits 'connection' (VsockSocket), 'error', 'close'; also an async iterator of connections
 * that ends when the server closes. Connections stay open when the server closes.
 */
export class VsockServer extends EventEmitter implements AsyncIterable<VsockSocket> {
  #h: Handle | null;
  readonly #address: VsockAddress | string;
  readonly #opts: VsockSocketOptions;
  #retry: NodeJS.Timeout | null = null;

  constructor(fd: number, address: VsockAddress | string, opts: VsockSocketOptions = {}) {
    super();
    this.#address = address;
    this.#opts = opts;
    this.#h = native().watch(fd, (status) => this.#onPoll(status));
    native().setEvents(this.#h, READABLE);
  }

  /** The bound address ({cid, port} for vsock, the path over AF_UNIX in tests). */
  address(): VsockAddress | string {
    return this.#address;
  }

  get listening(): boolean {
    return this.#h !== null;
  }

  close(): this {
    if (!this.#h) return this;
    if (this.#retry) clearTimeout(this.#retry);
    native().close(this.#h);
    this.#h = null;
    process.nextTick(() => this.emit("close"));
    return this;
  }

  ref(): this {
    if (this.#h) native().setRef(this.#h, true);
    return this;
  }

  unref(): this {
    if (this.#h) native().setRef(this.#h, false);
    return this;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<VsockSocket> {
    const queue: VsockSocket[] = [];
    let failure: Error | null = null;
    let wake: (() => void) | null = null;
    const onConnection = (s: VsockSocket) => {
      queue.push(s);
      wake?.();
    };
    const onError = (err: Error) => {
      failure = err;
      wake?.();
    };
    const onClose = () => wake?.();
    this.on("connection", onConnection);
    this.on("error", onError);
    this.on("close", onClose);
    const detach = () => {
      this.off("connection", onConnection);
      this.off("error", onError);
      this.off("close", onClose);
    };
    const done = { value: undefined, done: true } as const;
    const it: AsyncIterableIterator<VsockSocket> = {
      next: async () => {
        for (;;) {
          const next = queue.shift();
          if (next) return { value: next, done: false };
          if (failure) {
            detach();
            throw failure;
          }
          if (!this.#h) {
            detach();
            return done;
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = null;
        }
      },
      return: async () => {
        detach();
        // Accepted but never handed out: nobody else will close them.
        for (const s of queue.splice(0)) s.destroy();
        return done;
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  #onPoll(status: number): void {
    if (!this.#h) return;
    const label = describeVsock(this.#address);
    if (status < 0) {
      // EPOLLERR arrives as EBADF and libuv has stopped watching: report the socket's own error, keep no zombie.
      const err = native().socketError(this.#h);
      this.close();
      this.emit("error", errnoError(err || -status, "accept", label));
      return;
    }
    while (this.#h) {
      let r: ReturnType<Addon["accept"]>;
      try {
        r = native().accept(this.#h);
      } catch (e) {
        const err = withAddress(e, label);
        if (err.code === "ECONNABORTED") continue;
        if (err.code === "EMFILE" || err.code === "ENFILE") this.#pauseAccepting();
        this.emit("error", err);
        return;
      }
      if (!r) return;
      const peer = r.cid === undefined || r.port === undefined ? label : { cid: r.cid, port: r.port };
      this.emit("connection", new VsockSocket(r.fd, peer, this.#opts));
    }
  }

  // Out of fds: the pending connection keeps the fd readable, so back off instead of spinning.
  #pauseAccepting(): void {
    if (!this.#h) return;
    native().setEvents(this.#h, 0);
    this.#retry = setTimeout(() => {
      this.#retry = null;
      if (this.#h) native().setEvents(this.#h, READABLE);
    }, 100);
  }
}

export interface VsockListenOptions extends VsockServerOptions {
  /** Local CID to bind (default VMADDR_CID_ANY). */
  cid?: number;
  /** Port to bind; VMADDR_PORT_ANY lets the kernel choose (see server.address()). */
  port: number;
}

/** Listens on an AF_VSOCK port; throws a system error (EADDRINUSE, EAFNOSUPPORT, ...) naming the address. */
export function listenVsock(opts: VsockListenOptions): VsockServer {
  const cid = opts.cid ?? VMADDR_CID_ANY;
  checkU32("cid", cid);
  checkU32("port", opts.port);
  let fd: number;
  try {
    fd = native().vsockListen(cid, opts.port, opts.backlog ?? 128);
  } catch (e) {
    const err = withAddress(e, describeVsock({ cid, port: opts.port }));
    if (err.code === "EAFNOSUPPORT") err.message += ": this kernel has no AF_VSOCK support (vsock module not loaded?)";
    throw err;
  }
  return new VsockServer(fd, native().vsockLocalAddress(fd), opts);
}
