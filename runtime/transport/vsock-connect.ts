import { withAddress } from "./errno-error.ts";
import { native } from "./vsock-addon.ts";
import { checkU32, describeVsock } from "./vsock-address.ts";
import { VsockSocket, type VsockSocketOptions } from "./vsock-socket.ts";

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
    const err = withAddress(e, describeVsock(peer));
    if (err.syscall === "bind") err.message += privilegedBindHint(err.code);
    throw err;
  }
  return VsockSocket.connecting(fd, peer, timeoutMs, opts);
}
