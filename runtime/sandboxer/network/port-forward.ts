import type net from "node:net";
import { execa } from "execa";
import { portForwardStreamId } from "../../contract/port-forward.ts";
import type { Logger } from "../../log/log.ts";
import type { AnyChannel } from "../../streaming/stdio-stream.ts";
import { receiveStream, sendStream } from "../../streaming/stdio-stream.ts";
import { listenTcpInNetns, originalDestination } from "../../transport/netns-tcp.ts";

/** The pod netns's own NAT chain: flushed and refilled at every start, so a restarted daemon leaves no stale rule. */
const CHAIN = "KUASAR-PORT-FORWARD";
/** Connections forwarded at once per pod; more are refused (each holds two guest streams). */
const MAX_CONNECTIONS = 64;

async function iptables(nsPath: string, args: string[]): Promise<{ ok: boolean; err: string }> {
  const r = await execa("nsenter", [`--net=${nsPath}`, "--", "iptables", "-w", "5", "-t", "nat", ...args], {
    reject: false,
    stdin: "ignore",
  });
  return { ok: !r.failed, err: r.stderr.trim() || (r.shortMessage ?? "") };
}

async function mustIptables(nsPath: string, args: string[]): Promise<void> {
  const r = await iptables(nsPath, args);
  if (!r.ok) throw new Error(`port-forward: iptables -t nat ${args.join(" ")} in ${nsPath} failed: ${r.err}`);
}

/**
 * containerd's CRI PortForward enters the pod's network namespace and dials localhost:<port>, but the pod's servers
 * run in the VM. So the daemon listens on one port of 127.0.0.1 inside that namespace, a NAT rule there redirects
 * every other TCP connection to 127.0.0.1 to it, and each accepted connection is carried to localhost:<the port it
 * was meant for> in the guest over two agent streams (runtime/contract/port-forward.ts). Only processes in the pod's
 * namespace reach the listener: containerd, and the VMM itself.
 */
export class PortForwarder {
  private readonly sockets = new Set<net.Socket>();
  private conns = 0;

  private constructor(
    private readonly nsPath: string,
    private readonly server: net.Server,
    readonly port: number,
    private readonly openStream: (id: string) => Promise<AnyChannel>,
    private readonly log: Logger,
  ) {
    server.on("connection", (s: net.Socket) => void this.forward(s));
    server.on("error", (e: Error) => log.warn(`port-forward listener in ${nsPath}: ${e.message}`));
  }

  static async start(opts: {
    nsPath: string;
    openStream: (id: string) => Promise<AnyChannel>;
    log: Logger;
  }): Promise<PortForwarder> {
    const { server, port } = await listenTcpInNetns(opts.nsPath);
    try {
      await iptables(opts.nsPath, ["-N", CHAIN]);
      await mustIptables(opts.nsPath, ["-F", CHAIN]);
      if (!(await iptables(opts.nsPath, ["-C", "OUTPUT", "-j", CHAIN])).ok) {
        await mustIptables(opts.nsPath, ["-A", "OUTPUT", "-j", CHAIN]);
      }
      await mustIptables(opts.nsPath, [
        ...["-A", CHAIN, "-o", "lo", "-d", "127.0.0.1/32", "-p", "tcp"],
        ...["!", "--dport", String(port), "-j", "REDIRECT", "--to-ports", String(port)],
      ]);
    } catch (err) {
      server.close();
      throw err;
    }
    return new PortForwarder(opts.nsPath, server, port, opts.openStream, opts.log);
  }

  private async forward(client: net.Socket): Promise<void> {
    client.on("error", () => client.destroy());
    let port: number;
    try {
      port = originalDestination(client).port;
    } catch (err) {
      this.log.warn(`port-forward: ${(err as Error).message}`);
      client.destroy();
      return;
    }
    // A client that dialled the listener itself has nowhere to go; past the limit the pod is refused more.
    if (port === this.port || this.sockets.size >= MAX_CONNECTIONS) {
      client.destroy();
      return;
    }
    this.sockets.add(client);
    const conn = ++this.conns;
    const id = (direction: "out" | "in") => portForwardStreamId({ port, conn, direction });
    try {
      // "out" first: the guest dials the port when it opens, and fails the stream when nothing listens.
      const out = await this.openStream(id("out"));
      const inbound = await this.openStream(id("in"));
      await Promise.all([receiveStream(out, client, id("out")), sendStream(inbound, client, id("in"))]);
    } catch (err) {
      this.log.debug(`port-forward to guest port ${port}: ${(err as Error).message}`);
    } finally {
      client.destroy();
      this.sockets.delete(client);
    }
  }

  /** Stops listening and drops the NAT rules (a namespace that is already gone has none left). */
  async close(): Promise<void> {
    this.server.close();
    for (const s of this.sockets) s.destroy();
    await iptables(this.nsPath, ["-F", CHAIN]);
  }
}
