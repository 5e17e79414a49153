import type { Readable, Writable } from "node:stream";
import type { Any } from "@bufbuild/protobuf/wkt";
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
  private endpoints = new Map<string, Endpoint>();
  private waiters = new Map<string, Array<(e: Endpoint) => void>>();

  offer(id: string, endpoint: Endpoint): void {
    const waiting = this.waiters.get(id);
    this.waiters.delete(id);
    if (waiting?.length) for (const w of waiting) w(endpoint);
    else this.endpoints.set(id, endpoint);
  }

  withdraw(id: string): void {
    this.endpoints.delete(id);
  }

  private claim(id: string, timeoutMs: number): Promise<Endpoint> {
    const ready = this.endpoints.get(id);
    if (ready) {
      this.endpoints.delete(id);
      return Promise.resolve(ready);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const list = this.waiters.get(id) ?? [];
        this.waiters.set(
          id,
          list.filter((w) => w !== done),
        );
        reject(new Error(`no process stdio named ${id} appeared within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (e: Endpoint) => {
        clearTimeout(timer);
        resolve(e);
      };
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), done]);
    });
  }

  /**
   * The body of Streaming.Stream: read the StreamInit and ack it at once (the host opens an exec's streams
   * before it calls Start, which is what creates the process), then relay once the process offers its end.
   */
  async serve(requests: AsyncIterable<Any>, send: (m: Any) => Promise<void>, timeoutMs = RENDEZVOUS_MS): Promise<void> {
    const ch: AnyChannel = { send, messages: requests[Symbol.asyncIterator](), end: () => {} };
    const id = await readInit(ch);
    await send(ackMessage());
    const endpoint = await this.claim(id, timeoutMs);
    if (endpoint.kind === "source") await sendStream(ch, endpoint.stream);
    else await receiveStream(ch, endpoint.stream);
  }
}
