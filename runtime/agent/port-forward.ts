import net from "node:net";
import { parsePortForwardStreamId } from "../contract/port-forward.ts";
import { Rendezvous } from "../streaming/rendezvous.ts";
import { type AnyChannel, receiveStream, sendStream } from "../streaming/stdio-stream.ts";

/** How long the host's second stream of a connection may take after its first. */
const PAIR_MS = 10_000;
const DIAL_MS = 5_000;

/** Connects to localhost:port in the guest's network namespace, where the pod's containers listen: IPv4, then IPv6. */
export async function dialLocal(port: number): Promise<net.Socket> {
  const attempt = (host: string) =>
    new Promise<net.Socket>((resolve, reject) => {
      // Half-open: the client's EOF is passed on as ours, and the server may still answer after it.
      const s = net.connect({ host, port, timeout: DIAL_MS, allowHalfOpen: true });
      s.once("connect", () => {
        s.setTimeout(0);
        resolve(s);
      });
      s.once("timeout", () => s.destroy(new Error(`connect ${host}:${port} timed out`)));
      s.once("error", reject);
    });
  try {
    return await attempt("127.0.0.1");
  } catch (v4) {
    return attempt("::1").catch((v6: Error) => {
      throw new Error(
        `port-forward: nothing answers on localhost:${port} (IPv4: ${(v4 as Error).message}; IPv6: ${v6.message})`,
      );
    });
  }
}

/**
 * The guest's end of port-forwarding (runtime/contract/port-forward.ts): the "out" stream dials the port and carries
 * what the server sends; the "in" stream, paired by connection number, carries what the client sends. Each direction
 * keeps to its stream's credit, so neither side buffers more than a window.
 */
export class PortForwards {
  private readonly conns = new Rendezvous<Connection>();

  constructor(private readonly dial: (port: number) => Promise<net.Socket> = dialLocal) {}

  async serve(ch: AnyChannel, id: string): Promise<void> {
    const s = parsePortForwardStreamId(id);
    const key = String(s.conn);
    if (s.direction === "out") {
      const conn = new Connection(await this.dial(s.port));
      this.conns.offer(key, conn);
      try {
        await conn.half(sendStream(ch, conn.socket, id));
      } finally {
        this.conns.withdraw(key);
      }
      return;
    }
    const conn = await this.conns.claim(key, PAIR_MS, "port-forward connection");
    await conn.half(receiveStream(ch, conn.socket, id));
  }
}

/** A connection to a guest port, closed once both of its directions are done, or at once when either fails. */
class Connection {
  private open = 2;

  constructor(readonly socket: net.Socket) {
    socket.on("error", () => socket.destroy());
  }

  async half(done: Promise<void>): Promise<void> {
    try {
      await done;
    } catch (err) {
      this.socket.destroy();
      throw err;
    } finally {
      if (--this.open === 0) this.socket.destroy();
    }
  }
}
