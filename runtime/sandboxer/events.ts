import net from "node:net";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Events } from "../protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import { TtrpcClient } from "../ttrpc/index.ts";
import type { Logger } from "./log.ts";

/** Events wait here while containerd is unreachable; past this the oldest are dropped (and logged). */
const MAX_QUEUED = 1024;

interface Pending {
  namespace: string;
  topic: string;
  typeUrl: string;
  value: Uint8Array;
}

/**
 * Forwards task events to containerd's ttrpc Events service (<containerd address>.ttrpc), in order, from a
 * bounded queue: publishing never blocks a task call, and a containerd restart only delays events.
 */
export class EventPublisher {
  private queue: Pending[] = [];
  private client: TtrpcClient | undefined;
  private running = false;
  private closed = false;

  constructor(
    private readonly ttrpcAddress: string,
    private readonly log: Logger,
  ) {}

  /** containerd accepts the bare type URL ("containerd.events.TaskExit") as the event's Any type. */
  publish<D extends DescMessage>(namespace: string, topic: string, schema: D, event: MessageShape<D>): void {
    this.publishRaw(namespace, topic, schema.typeName, toBinary(schema, event));
  }

  /** An event already encoded (e.g. one the guest sent). */
  publishRaw(namespace: string, topic: string, typeUrl: string, value: Uint8Array): void {
    if (this.closed) return;
    if (this.queue.length >= MAX_QUEUED) {
      const dropped = this.queue.shift();
      this.log.warn(`containerd events queue full: dropped ${dropped?.topic}`);
    }
    this.queue.push({ namespace, topic, typeUrl, value });
    if (!this.running) void this.drain();
  }

  private async drain(): Promise<void> {
    this.running = true;
    let backoff = 100;
    while (this.queue.length && !this.closed) {
      const ev = this.queue[0]!;
      try {
        const client = await this.connect();
        await client.service(Events).forward(
          {
            envelope: {
              timestamp: timestampNow(),
              namespace: ev.namespace,
              topic: ev.topic,
              event: { typeUrl: ev.typeUrl, value: ev.value },
            },
          },
          { timeoutMs: 5000 },
        );
        this.queue.shift();
        backoff = 100;
      } catch (err) {
        this.client?.close();
        this.client = undefined;
        this.log.debug(`forward ${ev.topic} to ${this.ttrpcAddress}: ${(err as Error).message}; retrying`);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
    this.running = false;
  }

  private async connect(): Promise<TtrpcClient> {
    if (this.client) return this.client;
    const sock = net.connect(this.ttrpcAddress);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    const client = new TtrpcClient(sock);
    void client.closed.then(() => {
      if (this.client === client) this.client = undefined;
    });
    this.client = client;
    return client;
  }

  close(): void {
    this.closed = true;
    this.client?.close();
  }
}

/** Field 1 of every containerd task event (TaskStart, TaskExit, TaskOOM, ...) is the container id. */
export function containerIdOf(event: Uint8Array): string | undefined {
  try {
    const r = new BinaryReader(event);
    while (r.pos < r.len) {
      const [field, wire] = r.tag();
      if (field === 1 && wire === WireType.LengthDelimited) return r.string();
      r.skip(wire);
    }
  } catch {
    // not a task event
  }
  return undefined;
}
