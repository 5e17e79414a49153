// Hybrid vsock (cloud-hypervisor, vhost-device-vsock, containerd's ttrpc+hvsock): the host connects to the
// VMM's unix socket, writes "CONNECT <port>\n", and after a reply line containing "OK" the stream is the
// guest's AF_VSOCK connection on that port.
import type { Server, Socket } from "node:net";
import { type RetryError, type RetryPolicy, withRetry } from "./retry.ts";
import { connectUnix, listenUnix } from "./unix.ts";

export type { RetryPolicy } from "./retry.ts";

/** Longest reply or request line accepted; real ones are ~20 bytes. */
const MAX_LINE = 512;

export type HybridVsockError = RetryError & { socketPath: string; port: number };

export interface HybridVsockDialOptions {
  /** Per attempt: connect plus the OK line, in ms (default 3000). */
  timeoutMs?: number;
  /** Retried: ECONNREFUSED/ENOENT (VMM not up yet), EHVSOCKCLOSED (no guest listener yet), ETIMEDOUT. */
  retry?: RetryPolicy;
}

const RETRYABLE = new Set(["ECONNREFUSED", "ENOENT", "EHVSOCKCLOSED", "ETIMEDOUT"]);

/** Dials a guest port through a hybrid vsock unix socket; bytes after the OK line stay readable on the socket. */
export function dialHybridVsock(socketPath: string, port: number, opts: HybridVsockDialOptions = {}): Promise<Socket> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
    return Promise.reject(
      new RangeError(`hybrid vsock ${socketPath}: port must be an integer in 0..4294967295, got ${port}`),
    );
  }
  return withRetry(
    opts.retry,
    opts.timeoutMs ?? 3000,
    (e) => RETRYABLE.has(e.code ?? ""),
    (timeoutMs) => attempt(socketPath, port, timeoutMs),
  );
}

function hvsockError(
  socketPath: string,
  port: number,
  code: string,
  reason: string,
  cause?: unknown,
): HybridVsockError {
  const err: HybridVsockError = Object.assign(
    new Error(`hybrid vsock ${socketPath} port ${port}: ${reason}`, cause === undefined ? {} : { cause }),
    { code, socketPath, port },
  );
  return err;
}

async function attempt(socketPath: string, port: number, timeoutMs: number): Promise<Socket> {
  const started = Date.now();
  let sock: Socket;
  try {
    sock = await connectUnix(socketPath, { timeoutMs });
  } catch (e) {
    const err = e as RetryError;
    const hint = err.code === "ENOENT" || err.code === "ECONNREFUSED" ? " (is the VMM running?)" : "";
    throw hvsockError(socketPath, port, err.code ?? "EIO", `${err.message}${hint}`, err);
  }
  const remaining = Math.max(1, timeoutMs - (Date.now() - started));
  const timer = setTimeout(
    () => sock.destroy(hvsockError(socketPath, port, "ETIMEDOUT", `no reply to CONNECT within ${timeoutMs} ms`)),
    remaining,
  );
  try {
    sock.write(`CONNECT ${port}\n`);
    const line = await readLine(sock);
    if (!line.includes("OK")) {
      throw hvsockError(socketPath, port, "EHVSOCKREJECTED", `the VMM answered ${JSON.stringify(line)} instead of OK`);
    }
    return sock;
  } catch (e) {
    sock.destroy();
    const err = e as RetryError;
    if ("socketPath" in err) throw err;
    if (err.code === "EHVSOCKREJECTED")
      throw hvsockError(socketPath, port, err.code, `the VMM's reply has ${err.message}`);
    throw hvsockError(
      socketPath,
      port,
      "EHVSOCKCLOSED",
      `the connection closed before the OK line (${err.message}); nothing listens on that port in the guest yet?`,
      err,
    );
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads one "\n"-terminated line without consuming anything after it: the rest is unshifted back, and the
 * socket is left paused-by-default so the next reader gets every byte.
 */
function readLine(sock: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = () => {
      sock.off("readable", onReadable);
      sock.off("end", onEnd);
      sock.off("error", onError);
      sock.off("close", onClose);
    };
    const onReadable = () => {
      for (let chunk = sock.read() as Buffer | null; chunk !== null; chunk = sock.read() as Buffer | null) {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        const nl = buf.indexOf(10);
        if (nl >= 0) {
          done();
          const rest = buf.subarray(nl + 1);
          if (rest.length > 0) sock.unshift(rest);
          resolve(buf.subarray(0, nl).toString("latin1").replace(/\r$/, ""));
          return;
        }
        if (buf.length > MAX_LINE) {
          done();
          reject(Object.assign(new Error(`no newline within ${MAX_LINE} bytes`), { code: "EHVSOCKREJECTED" }));
          return;
        }
      }
    };
    const onEnd = () => {
      done();
      reject(new Error("EOF"));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(new Error("closed"));
    };
    sock.on("readable", onReadable);
    sock.on("end", onEnd);
    sock.on("error", onError);
    sock.on("close", onClose);
  });
}

export type GuestPortHandler = (sock: Socket) => void;

/**
 * The VMM side of hybrid vsock, for tests: accepts on a unix socket, reads "CONNECT <port>\n", answers
 * "OK <n>\n" and hands the stream to the handler registered for that port. Like vhost-device-vsock with
 * no guest listener, a connection for an unregistered port (or a malformed request) is closed unanswered.
 */
export class HybridVsockListener {
  readonly socketPath: string;
  readonly #server: Server;
  readonly #handlers = new Map<number, GuestPortHandler>();
  #nextLocalPort = 1024;

  private constructor(socketPath: string, server: Server) {
    this.socketPath = socketPath;
    this.#server = server;
    server.on("connection", (sock) => this.#onConnection(sock));
  }

  static async listen(socketPath: string): Promise<HybridVsockListener> {
    return new HybridVsockListener(socketPath, await listenUnix(socketPath));
  }

  /** Routes CONNECT <port> to `handler` (the guest starts listening on that port). */
  handle(port: number, handler: GuestPortHandler): this {
    this.#handlers.set(port, handler);
    return this;
  }

  /** Stops routing `port` (the guest's listener went away). */
  unhandle(port: number): this {
    this.#handlers.delete(port);
    return this;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  async #onConnection(sock: Socket): Promise<void> {
    sock.on("error", () => sock.destroy());
    let line: string;
    try {
      line = await readLine(sock);
    } catch {
      sock.destroy();
      return;
    }
    const m = /^CONNECT (\d+)$/.exec(line);
    const handler = m ? this.#handlers.get(Number(m[1])) : undefined;
    if (!handler) {
      sock.destroy();
      return;
    }
    sock.write(`OK ${this.#nextLocalPort++}\n`);
    handler(sock);
  }
}
