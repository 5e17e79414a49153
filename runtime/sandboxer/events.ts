import net from "node:net";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { type Timestamp, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "../log/log.ts";
import { Events } from "../protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import { Code, TtrpcClient, TtrpcError } from "../ttrpc/index.ts";

export interface PublisherOptions {
  /** Events one source may have waiting (containerd unreachable or slow); past this its oldest are dropped. */
  maxQueued?: number;
  /** Deadline of one Events.Forward call. */
  timeoutMs?: number;
  /** Retry delay after a transient failure, doubling from the first value up to the second. */
  backoffMs?: readonly [number, number];
  /** Repeating warnings (drops, rejections) are reported at most once per window, with a count. */
  warnWindowMs?: number;
}

const DEFAULTS: Required<PublisherOptions> = {
  maxQueued: 1024,
  timeoutMs: 5000,
  backoffMs: [100, 5000],
  warnWindowMs: 10_000,
};

interface Pending {
  timestamp: Timestamp;
  namespace: string;
  topic: string;
  typeUrl: string;
  value: Uint8Array;
}

/** One source's events (a sandbox's), sent in order, one Forward in flight at a time. */
interface SourceQueue {
  readonly source: string;
  readonly items: Pending[];
  draining: boolean;
  readonly drops: ThrottledWarning;
  readonly rejections: ThrottledWarning;
}

/** The connection to containerd and how many answers came back on it (to tell a dead one from a slow call). */
interface Connection {
  client: TtrpcClient;
  answers: number;
}

type Outcome = { ok: true } | { ok: false; transient: boolean; error: string };

/**
 * Forwards task events to containerd's ttrpc Events service (<containerd address>.ttrpc). Each source (a sandbox
 * id) has its own bounded queue, drained in order and concurrently with the others over the one multiplexed
 * connection: a sandbox whose events containerd answers slowly, rejects, or that floods, delays no other sandbox.
 * Publishing never blocks a task call, and a containerd restart only delays events.
 */
export class EventPublisher {
  private readonly queues = new Map<string, SourceQueue>();
  private readonly opts: Required<PublisherOptions>;
  private conn: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  private readonly stop = new AbortController();

  constructor(
    private readonly ttrpcAddress: string,
    private readonly log: Logger,
    options: PublisherOptions = {},
  ) {
    this.opts = { ...DEFAULTS, ...options };
  }

  /**
   * Queues an event of `source` (the sandbox it concerns). The host encodes it; containerd accepts the bare type
   * URL ("containerd.events.TaskExit") as the event's Any type.
   */
  publish<D extends DescMessage>(
    source: string,
    namespace: string,
    topic: string,
    schema: D,
    event: MessageShape<D>,
  ): void {
    if (this.stop.signal.aborted) return;
    const q = this.queueOf(source);
    if (q.items.length >= this.opts.maxQueued) {
      const dropped = q.items.shift()!;
      q.drops.warn(
        `sandbox ${source}: ${this.opts.maxQueued} events wait for containerd; dropped the oldest (${dropped.topic})`,
      );
    }
    q.items.push({
      timestamp: timestampNow(),
      namespace,
      topic,
      typeUrl: schema.typeName,
      value: toBinary(schema, event),
    });
    if (!q.draining) void this.drain(q);
  }

  /** The sandbox is gone: its waiting events are dropped (a Forward in flight still completes). */
  forget(source: string): void {
    const q = this.queues.get(source);
    if (!q) return;
    this.queues.delete(source);
    if (q.items.length) this.log.info(`sandbox ${source} is gone: dropped ${q.items.length} undelivered events`);
    q.items.length = 0;
  }

  close(): void {
    this.stop.abort();
    for (const q of this.queues.values()) q.items.length = 0;
    this.queues.clear();
    this.conn?.client.close();
  }

  private queueOf(source: string): SourceQueue {
    let q = this.queues.get(source);
    if (!q) {
      const window = this.opts.warnWindowMs;
      q = {
        source,
        items: [],
        draining: false,
        drops: new ThrottledWarning(this.log, window),
        rejections: new ThrottledWarning(this.log, window),
      };
      this.queues.set(source, q);
    }
    return q;
  }

  private async drain(q: SourceQueue): Promise<void> {
    q.draining = true;
    let backoff = this.opts.backoffMs[0];
    while (q.items.length && this.queues.get(q.source) === q) {
      const ev = q.items[0]!;
      const r = await this.forward(ev);
      if (!r.ok && r.transient) {
        this.log.debug(`forward ${ev.topic} of sandbox ${q.source} to ${this.ttrpcAddress}: ${r.error}; retrying`);
        if (!(await this.sleep(backoff))) break;
        backoff = Math.min(backoff * 2, this.opts.backoffMs[1]);
        continue;
      }
      if (!r.ok) q.rejections.warn(`sandbox ${q.source}: containerd refused event ${ev.topic}, dropped it: ${r.error}`);
      backoff = this.opts.backoffMs[0];
      // Unless a full queue dropped it while it was in flight.
      if (q.items[0] === ev) q.items.shift();
    }
    q.draining = false;
  }

  /**
   * One Forward call. Transient: no connection, the connection dropped, or no answer in time; anything else
   * containerd answered (InvalidArgument, NotFound, ...) will not change on a retry.
   */
  private async forward(ev: Pending): Promise<Outcome> {
    let conn: Connection;
    try {
      conn = await this.connect();
    } catch (err) {
      return { ok: false, transient: true, error: (err as Error).message };
    }
    const answersBefore = conn.answers;
    try {
      await conn.client.service(Events).forward(
        {
          envelope: {
            timestamp: ev.timestamp,
            namespace: ev.namespace,
            topic: ev.topic,
            event: { typeUrl: ev.typeUrl, value: ev.value },
          },
        },
        { timeoutMs: this.opts.timeoutMs },
      );
      conn.answers++;
      return { ok: true };
    } catch (err) {
      const e = err instanceof TtrpcError ? err : undefined;
      if (e?.code === Code.DeadlineExceeded) {
        // Other sources' calls answered meanwhile: containerd is only slow on this one. Nothing did: the
        // connection is dead (half-open), and the next call dials again.
        if (conn.answers === answersBefore && this.conn === conn) {
          this.conn = undefined;
          conn.client.close();
        }
        return { ok: false, transient: true, error: e.message };
      }
      if (e?.code === Code.Unavailable) return { ok: false, transient: true, error: e.message };
      if (e) conn.answers++;
      return { ok: false, transient: false, error: e ? `${e.codeName}: ${e.message}` : String(err) };
    }
  }

  /** Every queue shares one connection, and one dial. */
  private connect(): Promise<Connection> {
    if (this.conn) return Promise.resolve(this.conn);
    this.connecting ??= this.dial().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async dial(): Promise<Connection> {
    const sock = net.connect(this.ttrpcAddress);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", (err) => {
        sock.destroy();
        reject(err);
      });
    });
    const conn: Connection = { client: new TtrpcClient(sock), answers: 0 };
    void conn.client.closed.then(() => {
      if (this.conn === conn) this.conn = undefined;
    });
    if (this.stop.signal.aborted) conn.client.close();
    else this.conn = conn;
    return conn;
  }

  /** Resolves false when the publisher is closed meanwhile. */
  private sleep(ms: number): Promise<boolean> {
    const signal = this.stop.signal;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve(!signal.aborted);
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

/**
 * A warning something outside the daemon can repeat at will (a flooding guest, a full queue): the first line at
 * once, then at most one line per window saying how many more there were and the last of them.
 */
export class ThrottledWarning {
  private suppressed = 0;
  private last = "";
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly windowMs: number,
  ) {}

  warn(msg: string): void {
    if (this.timer) {
      this.suppressed++;
      this.last = msg;
      return;
    }
    this.log.warn(msg);
    this.startWindow();
  }

  private startWindow(): void {
    this.timer = setTimeout(() => this.endWindow(), this.windowMs);
    this.timer.unref();
  }

  private endWindow(): void {
    this.timer = undefined;
    if (!this.suppressed) return;
    this.log.warn(`${this.suppressed} more like this in the last ${this.windowMs / 1000} s; the last: ${this.last}`);
    this.suppressed = 0;
    // A flood that goes on stays at one line per window.
    this.startWindow();
  }
}
