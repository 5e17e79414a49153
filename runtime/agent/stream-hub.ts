import type { Readable, Writable } from "node:stream";
import type { Any } from "@bufbuild/protobuf/wkt";
import { Rendezvous } from "../streaming/rendezvous.ts";
import { type AnyChannel, ackMessage, readInit, receiveStream, sendStream } from "../streaming/stdio-stream.ts";

/** A process stdio end waiting for the host: stdout/stderr are sent, stdin is received. */
export type Endpoint = { kind: "source"; stream: Readable } | { kind: "sink"; stream: Writable };

/** How long a stream from the host may wait for its process to be created (the host may open it first). */
const RENDEZVOUS_MS = 30_000;

/**
 * Pairs the host's Streaming streams with process stdio by stream id, whichever arrives first: a process
 * offers its ends when it is created, the host opens one stream per end right after Create or Exec.
 */
export class StreamHub {
  private ends = new Rendezvous<Endpoint>();
  private routes: Array<[prefix: string, serve: (ch: AnyChannel, id: string) => Promise<void>]> = [];

  /** Streams whose id starts with prefix are served by `serve` instead of a process's stdio (port-forwarding). */
  route(prefix: string, serve: (ch: AnyChannel, id: string) => Promise<void>): this {
    this.routes.push([prefix, serve]);
    return this;
  }

  offer(id: string, endpoint: Endpoint): void {
    this.ends.offer(id, endpoint);
  }

  withdraw(id: string): void {
    this.ends.withdraw(id);
  }

  /**
   * The body of Streaming.Stream: read the StreamInit and ack it at once (the host opens an exec's streams
   * before it calls Start, which is what creates the process), then relay once the process offers its end.
   */
  async serve(requests: AsyncIterable<Any>, send: (m: Any) => Promise<void>, timeoutMs = RENDEZVOUS_MS): Promise<void> {
    const ch: AnyChannel = { send, messages: requests[Symbol.asyncIterator](), end: () => {} };
    const id = await readInit(ch);
    await send(ackMessage());
    const routed = this.routes.find(([prefix]) => id.startsWith(prefix));
    if (routed) return routed[1](ch, id);
    const endpoint = await this.ends.claim(id, timeoutMs, "process stdio");
    // the host is held to the same credit as the guest: stdin past its window is cut off, not buffered
    if (endpoint.kind === "source") await sendStream(ch, endpoint.stream, id);
    else await receiveStream(ch, endpoint.stream, id);
  }
}
