// Port-forwarding into a pod VM: for each TCP connection containerd's PortForward opens in the pod's network
// namespace, the host opens two Streaming streams to the agent, one per direction, so each direction ends on its own
// (a half-close) and keeps its own flow-control credit.

export type PortForwardDirection = "out" | "in";

export interface PortForwardStream {
  /** The TCP port in the guest. */
  port: number;
  /** The host's number for the connection, pairing its two streams. */
  conn: number;
  /** out: the guest's bytes to the host (opened first: the guest dials the port then); in: the host's to the guest. */
  direction: PortForwardDirection;
}

export const PORT_FORWARD_PREFIX = "portforward/";

export function portForwardStreamId(s: PortForwardStream): string {
  return `${PORT_FORWARD_PREFIX}${s.port}/${s.conn}/${s.direction}`;
}

/** Parses a port-forward stream id; throws naming what is wrong. */
export function parsePortForwardStreamId(id: string): PortForwardStream {
  const m = /^portforward\/(\d{1,5})\/(\d{1,10})\/(out|in)$/.exec(id);
  const port = Number(m?.[1]);
  if (!m || port < 1 || port > 65535) {
    throw new Error(
      `port-forward stream id ${JSON.stringify(id.slice(0, 80))} is not portforward/<1-65535>/<n>/<out|in>`,
    );
  }
  return { port, conn: Number(m[2]), direction: m[3] as PortForwardDirection };
}
