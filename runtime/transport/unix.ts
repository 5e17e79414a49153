import { chmod, lstat, unlink } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { ErrnoError } from "./errno-error.ts";

export interface UnixConnectOptions {
  /** Milliseconds before the attempt fails with ETIMEDOUT (default 3000). */
  timeoutMs?: number;
}

/** Connects to a unix socket; errors carry the errno code and name the path. */
export function connectUnix(socketPath: string, opts: UnixConnectOptions = {}): Promise<Socket> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path: socketPath });
    const timer = setTimeout(() => {
      const err: ErrnoError = new Error(`connect ETIMEDOUT ${socketPath} (no answer within ${timeoutMs} ms)`);
      err.code = "ETIMEDOUT";
      err.address = socketPath;
      sock.destroy(err);
    }, timeoutMs);
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    sock.once("error", onError);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.off("error", onError);
      resolve(sock);
    });
  });
}

export interface UnixListenOptions {
  /** File mode applied to the socket once it is bound, e.g. 0o660. */
  mode?: number;
  backlog?: number;
  /** Passed to net.createServer (default false, like net). */
  allowHalfOpen?: boolean;
}

/**
 * Listens on a unix socket path. A socket file left by a dead process is removed first; a live one (something
 * accepts connections) or a non-socket file at the path is an error rather than something to delete.
 */
export async function listenUnix(socketPath: string, opts: UnixListenOptions = {}): Promise<Server> {
  await removeStaleSocket(socketPath);
  const server = createServer({ allowHalfOpen: opts.allowHalfOpen ?? false });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ path: socketPath, backlog: opts.backlog ?? 511 }, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((e: ErrnoError) => {
    e.message = `listen on ${socketPath}: ${e.message}`;
    throw e;
  });
  if (opts.mode !== undefined) {
    try {
      await chmod(socketPath, opts.mode);
    } catch (e) {
      server.close();
      throw e;
    }
  }
  return server;
}

async function removeStaleSocket(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(socketPath)).isSocket();
  } catch (e) {
    if ((e as ErrnoError).code === "ENOENT") return;
    throw e;
  }
  if (!isSocket) {
    const err: ErrnoError = new Error(
      `listen on ${socketPath}: the path exists and is not a socket; remove it or pick another path`,
    );
    err.code = "EEXIST";
    throw err;
  }
  try {
    const live = await connectUnix(socketPath, { timeoutMs: 1000 });
    live.destroy();
  } catch (e) {
    if ((e as ErrnoError).code === "ECONNREFUSED") {
      await unlink(socketPath).catch((u: ErrnoError) => {
        if (u.code !== "ENOENT") throw u;
      });
      return;
    }
    throw e;
  }
  const err: ErrnoError = new Error(`listen on ${socketPath}: another process is accepting connections on it`);
  err.code = "EADDRINUSE";
  throw err;
}
