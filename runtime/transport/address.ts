// Addresses as containerd and Kuasar write them:
//   unix:///abs.sock            ttrpc+unix:///abs.sock
//   hvsock:///abs/uds:<port>    ttrpc+hvsock:///abs/uds:<port>   (hybrid vsock; path split at the first ':')
//   vsock://<cid>:<port>        ttrpc+vsock://<cid>:<port>
import type { Duplex } from "node:stream";
import { dialHybridVsock } from "./hybrid-vsock.ts";
import { type RetryPolicy, withRetry } from "./retry.ts";
import { connectUnix } from "./unix.ts";
import { connectVsock } from "./vsock.ts";

export type TransportAddress =
  | { transport: "unix"; path: string }
  | { transport: "hvsock"; path: string; port: number }
  | { transport: "vsock"; cid: number; port: number };

/** A parsed address; `ttrpc` records the containerd-style "ttrpc+" prefix. */
export type ParsedAddress = TransportAddress & { ttrpc: boolean };

export class AddressError extends Error {
  constructor(
    readonly address: string,
    reason: string,
  ) {
    super(`invalid address ${JSON.stringify(address)}: ${reason}`);
    this.name = "AddressError";
  }
}

const FORMS = "unix:///path, hvsock:///path:<port>, vsock://<cid>:<port> (each optionally prefixed with ttrpc+)";

function u32(address: string, what: string, text: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 0xffffffff) {
    throw new AddressError(address, `${what} ${JSON.stringify(text)} is not an integer in 0..4294967295`);
  }
  return Number(text);
}

function absolutePath(address: string, path: string): string {
  if (!path.startsWith("/"))
    throw new AddressError(address, `the socket path ${JSON.stringify(path)} must be absolute`);
  return path;
}

export function parseAddress(address: string): ParsedAddress {
  const ttrpc = address.startsWith("ttrpc+");
  const rest = ttrpc ? address.slice("ttrpc+".length) : address;
  if (ttrpc && rest.startsWith("/")) {
    throw new AddressError(
      address,
      "ttrpc+/path names an abstract unix socket, which is not supported; use ttrpc+unix:///path",
    );
  }
  const sep = rest.indexOf("://");
  if (sep < 0) throw new AddressError(address, `missing "://"; expected ${FORMS}`);
  const scheme = rest.slice(0, sep);
  const body = rest.slice(sep + 3);
  switch (scheme) {
    case "unix":
      return { transport: "unix", path: absolutePath(address, body), ttrpc };
    case "hvsock": {
      const colon = body.indexOf(":");
      if (colon < 0) throw new AddressError(address, "missing :<port> after the hybrid vsock socket path");
      return {
        transport: "hvsock",
        path: absolutePath(address, body.slice(0, colon)),
        port: u32(address, "port", body.slice(colon + 1)),
        ttrpc,
      };
    }
    case "vsock": {
      const colon = body.indexOf(":");
      if (colon < 0) throw new AddressError(address, "expected vsock://<cid>:<port>");
      return {
        transport: "vsock",
        cid: u32(address, "cid", body.slice(0, colon)),
        port: u32(address, "port", body.slice(colon + 1)),
        ttrpc,
      };
    }
    default:
      throw new AddressError(address, `unsupported scheme ${JSON.stringify(scheme)}; expected ${FORMS}`);
  }
}

/** Formats an address; `ttrpc: true` gives containerd's form (ttrpc+unix://...), false Kuasar's (hvsock://...). */
export function formatAddress(addr: TransportAddress, opts: { ttrpc?: boolean } = {}): string {
  const prefix = opts.ttrpc ? "ttrpc+" : "";
  switch (addr.transport) {
    case "unix":
      return `${prefix}unix://${addr.path}`;
    case "hvsock":
      if (addr.path.includes(":")) {
        throw new AddressError(addr.path, "a hybrid vsock socket path cannot contain ':' (the port separator)");
      }
      return `${prefix}hvsock://${addr.path}:${addr.port}`;
    case "vsock":
      return `${prefix}vsock://${addr.cid}:${addr.port}`;
  }
}

export interface DialOptions {
  /** Per attempt, in ms (default 3000). */
  timeoutMs?: number;
  /** Retries on "not there yet" errors: a missing or refusing socket, a guest port nobody listens on yet. */
  retry?: RetryPolicy;
}

// AF_VSOCK: a guest port without a listener is reset; a guest still booting does not answer.
const VSOCK_RETRYABLE = new Set(["ECONNRESET", "ETIMEDOUT"]);
const UNIX_RETRYABLE = new Set(["ENOENT", "ECONNREFUSED"]);

/** Connects to an address with the transport it names; vsock:// needs root (it binds a privileged source port). */
export function dial(address: string | TransportAddress, opts: DialOptions = {}): Promise<Duplex> {
  const addr = typeof address === "string" ? parseAddress(address) : address;
  const timeoutMs = opts.timeoutMs ?? 3000;
  switch (addr.transport) {
    case "unix":
      return withRetry(
        opts.retry,
        timeoutMs,
        (e) => UNIX_RETRYABLE.has(e.code ?? ""),
        (t) => connectUnix(addr.path, { timeoutMs: t }),
      );
    case "hvsock":
      return dialHybridVsock(addr.path, addr.port, opts);
    case "vsock":
      return withRetry(
        opts.retry,
        timeoutMs,
        (e) => VSOCK_RETRYABLE.has(e.code ?? ""),
        // vmm-task accepts vhost-vsock peers only from a privileged port, proof that this is the root daemon.
        (t) => connectVsock({ cid: addr.cid, port: addr.port, timeoutMs: t, privilegedPort: true }),
      );
  }
}
