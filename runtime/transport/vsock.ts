import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { constants } from "node:os";
import path from "node:path";
import { Duplex } from "node:stream";
import { fileURLToPath } from "node:url";
import { getSystemErrorMap, getSystemErrorName } from "node:util";

/** Bind to any local CID / let the kernel pick a port (linux/vm_sockets.h). */
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_PORT_ANY = 0xffffffff;

export interface VsockAddress {
  cid: number;
  port: number;
}

type Handle = object & { readonly __brand: "VsockHandle" };

interface Addon {
  watch(fd: number, cb: (status: number, events: number) => void): Handle;
  setEvents(h: Handle, events: number): void;
  setRef(h: Handle, ref: boolean): void;
  read(h: Handle, buf: Buffer): number;
  write(h: Handle, buf: Buffer): number;
  shutdown(h: Handle): void;
  socketError(h: Handle): number;
  close(h: Handle): void;
  accept(h: Handle): ({ fd: number } & Partial<VsockAddress>) | null;
  vsockListen(cid: number, port: number, backlog: number): number;
  vsockConnect(cid: number, port: number, timeoutMs: number, privileged: boolean): number;
  vsockLocalAddress(fd: number): VsockAddress;
  localCid(): number;
  unixListen(path: string, backlog: number): number;
  unixConnect(path: string): number;
  socketpair(): [number, number];
}

// uv_poll event bits (uv.h).
const READABLE = 1;
const WRITABLE = 2;

let addon: Addon | undefined;

/**
 * Addon locations, in lookup order: next to the running bundle (the guest), install-vmm's place beside an
 * installed /usr/local/bin/vmm-sandboxer, then the node-gyp build in the repo.
 */
export function vsockAddonCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [
    path.join(here, "vsock.node"),
    path.resolve(here, "../lib/kuasar-vmm/vsock.node"),
    path.resolve(here, "../native/vsock/build/Release/vsock.node"),
  ];
}

/** The addon, loaded once; netns-tcp.ts uses its TCP calls too. */
export function native(): Addon {
  if (addon) return addon;
  // An explicit KUASAR_VSOCK_ADDON is used as given: falling back would hide a misconfiguration.
  const explicit = process.env.KUASAR_VSOCK_ADDON;
  if (explicit && !existsSync(explicit)) {
    throw new Error(`KUASAR_VSOCK_ADDON=${explicit} does not exist; point it at a built vsock.node or unset it`);
  }
  const candidates = vsockAddonCandidates();
  const found = explicit || candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(
      `vsock addon not found (looked at: ${candidates.join(", ")}); build it with \`npx tsx runtime/native/build.ts\` ` +
        "(node-gyp; needs python3, make, g++) or point KUASAR_VSOCK_ADDON at a vsock.node",
    );
  }
  addon = createRequire(import.meta.url)(found) as Addon;
  return addon;
}

export type ErrnoError = NodeJS.ErrnoException & { address?: string };

/** A Node-style system error (code, errno, syscall) whose message names the peer. */
function errnoError(errno: number, syscall: string, address: string): ErrnoError {
  const code = getSystemErrorName(-errno);
  const text = getSystemErrorMap().get(-errno)?.[1];
  const err: ErrnoError = new Error(`${syscall} ${code}${text ? ` (${text})` : ""} ${address}`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  err.address = address;
  return err;
}

/** Adds the peer to an error thrown by the addon ("connect ECONNREFUSED (...)" -> "... vsock cid 3 port 1024"). */
function withAddress(e: unknown, address: string): ErrnoError {
  const err = e as ErrnoError;
  err.message = `${err.message} ${address}`;
  err.address = address;
  return err;
}

function describe(peer: VsockAddress | string): string {
  if (typeof peer === "string") return peer;
  return `vsock cid ${peer.cid === VMADDR_CID_ANY ? "any" : peer.cid} port ${peer.port === VMADDR_PORT_ANY ? "any" : peer.port}`;
}

// One scratch buffer for all reads: the loop is single-threaded and each chunk is copied out.
const scratch = Buffer.allocUnsafe(64 * 1024);

export interface VsockSocketOptions {
  /** Like net.Socket: when false (the default) the write side is ended once the peer ends. */
  allowHalfOpen?: boolean;
}

/**
 * A connected stream socket (AF_VSOCK, or AF_UNIX through the test hooks) as a Duplex with net.Socket's
 * semantics: 'end' on EOF, end() shuts down the write side, destroy() closes, errors carry errno codes.
 */
export class VsockSocket extends Duplex {
  /** The peer; undefined for the AF_UNIX test hooks. */
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
    this.#label = describe(peer);
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

  /** The bound address ({cid, port} for vsock, the path for the AF_UNIX test hook). */
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
    const label = describe(this.#address);
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

function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`vsock ${name} must be an integer in 0..4294967295, got ${v}`);
  }
}

export interface VsockConnectOptions extends VsockSocketOptions {
  cid: number;
  port: number;
  /** Milliseconds before the attempt fails with ETIMEDOUT (default 5000). */
  timeoutMs?: number;
  /**
   * Bind a free source port <= 1023 first (1023 downwards). Only root (CAP_NET_BIND_SERVICE) can, which is how
   * vmm-task tells the daemon from other local processes over vhost-vsock.
   */
  privilegedPort?: boolean;
}

/** Why a privileged source-port bind failed, in words an operator can act on. */
function privilegedBindHint(code: string | undefined): string {
  if (code === "EACCES" || code === "EPERM") {
    return ": binding a privileged vsock source port (<= 1023) needs root (CAP_NET_BIND_SERVICE); the guest agent accepts vhost-vsock connections only from such ports, so run this as root";
  }
  if (code === "EADDRINUSE") return ": every privileged vsock source port (1..1023) is in use on this host";
  return ": binding a privileged vsock source port failed";
}

/**
 * Connects to an AF_VSOCK listener; rejects with a system error (ECONNRESET, ETIMEDOUT, ENODEV, ...) naming the peer,
 * or, with privilegedPort, a bind error (syscall "bind": EACCES when not root, EADDRINUSE when no port is free).
 */
export async function connectVsock(opts: VsockConnectOptions): Promise<VsockSocket> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  checkU32("cid", opts.cid);
  checkU32("port", opts.port);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1)
    throw new RangeError(`vsock timeoutMs must be >= 1, got ${timeoutMs}`);
  const peer = { cid: opts.cid, port: opts.port };
  let fd: number;
  try {
    fd = native().vsockConnect(peer.cid, peer.port, timeoutMs, opts.privilegedPort ?? false);
  } catch (e) {
    const err = withAddress(e, describe(peer));
    if (err.syscall === "bind") err.message += privilegedBindHint(err.code);
    throw err;
  }
  return VsockSocket.connecting(fd, peer, timeoutMs, opts);
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
    const err = withAddress(e, describe({ cid, port: opts.port }));
    if (err.code === "EAFNOSUPPORT") err.message += ": this kernel has no AF_VSOCK support (vsock module not loaded?)";
    throw err;
  }
  return new VsockServer(fd, native().vsockLocalAddress(fd), opts);
}

/** This machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock). */
export function localCid(): number {
  try {
    return native().localCid();
  } catch (e) {
    const err = e as ErrnoError;
    err.message = `cannot read the local vsock CID: ${err.message}; /dev/vsock exists only with a vsock transport loaded`;
    throw err;
  }
}

/** The same native stream and server code over AF_UNIX, for tests on hosts where vsock has no reachable peer. */
export const vsockTestHooks = {
  socketPair(opts?: VsockSocketOptions): [VsockSocket, VsockSocket] {
    const [a, b] = native().socketpair();
    return [new VsockSocket(a, "socketpair[0]", opts), new VsockSocket(b, "socketpair[1]", opts)];
  },
  listenUnix(socketPath: string, opts: VsockServerOptions = {}): VsockServer {
    return new VsockServer(native().unixListen(socketPath, opts.backlog ?? 128), socketPath, opts);
  },
  connectUnix(socketPath: string, timeoutMs: number, opts?: VsockSocketOptions): Promise<VsockSocket> {
    let fd: number;
    try {
      fd = native().unixConnect(socketPath);
    } catch (e) {
      return Promise.reject(withAddress(e, socketPath));
    }
    return VsockSocket.connecting(fd, socketPath, timeoutMs, opts);
  },
};
