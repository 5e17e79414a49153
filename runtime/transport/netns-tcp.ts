import { once } from "node:events";
import net from "node:net";
import type { ErrnoError } from "./errno-error.ts";
import { native } from "./vsock-addon.ts";

/**
 * TCP listeners inside a pod's network namespace for a daemon that stays in the host's: containerd's CRI
 * PortForward enters the pod netns and dials 127.0.0.1:<port>, and Node cannot setns. The socket is made by the
 * vsock addon in a short-lived thread that joins the namespace; the socket keeps that namespace for its lifetime.
 */

export interface TcpAddress {
  address: string;
  port: number;
}

interface NetnsTcpAddon {
  tcpListenInNetns(nsPath: string, port: number, backlog: number): number;
  tcpOriginalDst(fd: number): TcpAddress;
}

// The vsock addon carries these calls too; vsock-addon.ts types only its own.
function addon(): NetnsTcpAddon {
  return native() as ReturnType<typeof native> & NetnsTcpAddon;
}

function listenHint(err: ErrnoError): string {
  if (err.syscall === "open")
    return "; nsPath must be the pod's network namespace file (/var/run/netns/<name> or /proc/<pid>/ns/net)";
  if (err.syscall === "setns" && err.code === "EINVAL") return "; the file is not a network namespace";
  if (err.syscall === "setns" && err.code === "EPERM")
    return "; joining a network namespace needs root (CAP_SYS_ADMIN)";
  if (err.syscall === "bind" && err.code === "EADDRINUSE") return "; another socket in that namespace has the port";
  return "";
}

/**
 * Listens on 127.0.0.1:port (0: the kernel picks; see the returned port) inside the network namespace nsPath.
 * Rejects with a system error whose syscall is the step that failed (open, setns, socket, setsockopt, bind, listen)
 * and whose message names the namespace file. Accepted sockets allow half-open connections: a client's EOF ends
 * only its direction (a relay passes it on), as a TCP peer expects.
 */
export async function listenTcpInNetns(
  nsPath: string,
  port = 0,
  backlog = 64,
): Promise<{ server: net.Server; port: number }> {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`listenTcpInNetns: port must be an integer in 0..65535, got ${port}`);
  }
  if (!Number.isInteger(backlog) || backlog < 1 || backlog > 0x7fffffff) {
    throw new RangeError(`listenTcpInNetns: backlog must be a positive integer, got ${backlog}`);
  }
  let fd: number;
  try {
    fd = addon().tcpListenInNetns(nsPath, port, backlog);
  } catch (e) {
    const err = e as ErrnoError;
    err.message = `cannot listen on 127.0.0.1:${port} in the network namespace ${nsPath}: ${err.message}${listenHint(err)}`;
    throw err;
  }
  const server = net.createServer({ allowHalfOpen: true });
  // Node calls listen() again on the fd: pass the backlog, or its default (511) replaces ours.
  server.listen({ fd, backlog });
  await once(server, "listening");
  const bound = server.address();
  if (bound === null || typeof bound === "string") {
    server.close();
    throw new Error(`listenTcpInNetns: the listener in ${nsPath} has no TCP address (got ${String(bound)})`);
  }
  return { server, port: bound.port };
}

type WithHandle = { _handle?: { fd?: unknown } | null };

/**
 * Where an accepted IPv4 connection was headed before netfilter NAT (an iptables REDIRECT) sent it to our listener,
 * from SO_ORIGINAL_DST; a connection that was not redirected reports the listener's own address.
 */
export function originalDestination(socket: net.Socket): TcpAddress {
  // A destroyed socket no longer knows its peer.
  const peer = socket.remoteAddress ? ` from ${socket.remoteAddress}:${socket.remotePort}` : "";
  // libuv's TCP handle exposes its fd on Linux; net.Socket has no public accessor for it.
  const fd = (socket as net.Socket & WithHandle)._handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    throw new Error(
      `originalDestination: the socket${peer} has no file descriptor (destroyed, or not an accepted TCP socket); call it from the server's 'connection' handler`,
    );
  }
  try {
    return addon().tcpOriginalDst(fd);
  } catch (e) {
    const err = e as ErrnoError;
    const hint = err.code === "ENOENT" ? "; conntrack has no entry for it (no NAT rule in its namespace)" : "";
    err.message = `cannot read the original destination (SO_ORIGINAL_DST) of the connection${peer}: ${err.message}${hint}`;
    throw err;
  }
}
