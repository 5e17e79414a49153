import type { Duplex } from "node:stream";
import type { Logger } from "../log/log.ts";
import { listenVsock, type VsockServer } from "../transport/vsock.ts";

/** The host's CID: every transport (vhost-vsock, cloud-hypervisor, vhost-device-vsock) sends host connections from it. */
export const HOST_CID = 2;
/** Linux lets only CAP_NET_BIND_SERVICE (in the initial user namespace) bind an AF_VSOCK port up to this one. */
export const LAST_PRIVILEGED_PORT = 1023;

export interface Peer {
  /** Undefined when the socket is not AF_VSOCK (never in the guest): refused. */
  cid: number | undefined;
  port: number | undefined;
}

/**
 * Whether a connection to the agent's ports comes from the root daemon; a refusal reason, or null to accept.
 * Over vhost-vsock any local user on the host (or a pod without seccomp) can reach the guest's CID, so only a
 * privileged source port proves the daemon. Over hybrid vsock (task.hybrid_vsock) the VMM or vhost-device-vsock
 * picks the source port itself (from 0 upwards, or from 2^30), and the unix socket's directory (root only) is the
 * access control. Either way the peer must be the host: a guest-local process (vsock loopback) is not.
 */
export function refusePeer(peer: Peer, opts: { hybrid: boolean }): string | null {
  if (peer.cid === undefined || peer.port === undefined) return "not an AF_VSOCK peer";
  if (peer.cid !== HOST_CID) return `not the host (cid ${HOST_CID})`;
  if (opts.hybrid || peer.port <= LAST_PRIVILEGED_PORT) return null;
  return `source port above ${LAST_PRIVILEGED_PORT}, so not the root daemon (booted without task.hybrid_vsock: vhost-vsock)`;
}

/**
 * At most one log line per interval: whoever can reach the port could otherwise flood the serial console the
 * host keeps. The next line counts the refusals that were not logged.
 */
export class RefusalLog {
  readonly #log: Pick<Logger, "warn">;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = Number.NEGATIVE_INFINITY;
  #suppressed = 0;

  constructor(log: Pick<Logger, "warn">, opts: { intervalMs?: number; now?: () => number } = {}) {
    this.#log = log;
    this.#intervalMs = opts.intervalMs ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  refused(listenPort: number, peer: Peer, reason: string): void {
    const t = this.#now();
    if (t - this.#last < this.#intervalMs) {
      this.#suppressed++;
      return;
    }
    const more = this.#suppressed > 0 ? ` (${this.#suppressed} more refused and not logged since the last line)` : "";
    this.#last = t;
    this.#suppressed = 0;
    this.#log.warn(
      `vsock port ${listenPort}: refused cid ${peer.cid ?? "?"} port ${peer.port ?? "?"}: ${reason}${more}`,
    );
  }
}

/** What the agent's listeners emit: a stream with the peer's vsock address (VsockSocket). */
export type PeerSocket = Duplex & { readonly remoteCid?: number | undefined; readonly remotePort?: number | undefined };

export interface HostOnlyOptions {
  hybrid: boolean;
  /** The listening port, for the log line. */
  port: number;
  refusals: RefusalLog;
}

/** Hands `serve` only the connections refusePeer accepts; the rest are closed at once. */
export function acceptHostOnly(
  server: { on(event: "connection", cb: (s: PeerSocket) => void): unknown },
  opts: HostOnlyOptions,
  serve: (s: PeerSocket) => void,
): void {
  server.on("connection", (s) => {
    const peer = { cid: s.remoteCid, port: s.remotePort };
    const reason = refusePeer(peer, opts);
    if (reason === null) {
      serve(s);
      return;
    }
    s.on("error", () => undefined);
    s.destroy();
    opts.refusals.refused(opts.port, peer, reason);
  });
}

/** Listens on a guest vsock port for the host only (see refusePeer); errors are logged. */
export function listenForHost(
  port: number,
  opts: { hybrid: boolean; log: Logger; refusals: RefusalLog },
  serve: (s: PeerSocket) => void,
): VsockServer {
  const l = listenVsock({ port });
  l.on("error", (e: Error) => opts.log.error(`vsock port ${port}: ${e.message}`));
  acceptHostOnly(l, { hybrid: opts.hybrid, port, refusals: opts.refusals }, serve);
  return l;
}
