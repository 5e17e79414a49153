/** Bind to any local CID / let the kernel pick a port (linux/vm_sockets.h). */
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_PORT_ANY = 0xffffffff;

export interface VsockAddress {
  cid: number;
  port: number;
}

/** How errors name a peer or a bound address. */
export function describeVsock(peer: VsockAddress | string): string {
  if (typeof peer === "string") return peer;
  return `vsock cid ${peer.cid === VMADDR_CID_ANY ? "any" : peer.cid} port ${peer.port === VMADDR_PORT_ANY ? "any" : peer.port}`;
}

/** CIDs and ports are u32s: a bad one is a RangeError before any syscall. */
export function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`vsock ${name} must be an integer in 0..4294967295, got ${v}`);
  }
}
